use super::*;

fn cells(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|c| c.map(str::to_string)).collect()
}

fn spec(sep: Option<&str>, hashed: bool) -> IdSpec {
    IdSpec {
        column: "genres".into(),
        separator: sep.map(str::to_string),
        hashed,
        max_values: None,
    }
}

fn write(plan: &IdPlan, v: &[Option<String>]) -> Result<Vec<f32>, DataError> {
    let rows: Vec<usize> = (0..v.len()).collect();
    let mut x = vec![9.0; v.len() * plan.slots];
    plan.write(v, &rows, &mut x, plan.slots, 0, "f.csv")?;
    Ok(x)
}

#[test]
fn strings_get_a_sorted_vocabulary_and_unseen_strings_row_zero() {
    let v = cells(&[Some("b"), Some("a"), Some("b")]);
    let plan = IdPlan::fit(&spec(None, false), &v, &[0, 1, 2], "f.csv").unwrap();
    assert_eq!(
        plan.values,
        IdValues::Vocabulary(vec!["a".into(), "b".into()])
    );
    assert_eq!(plan.feature_names(), vec!["genres"]);
    let x = write(&plan, &cells(&[Some("a"), Some("b"), Some("zzz")])).unwrap();
    assert_eq!(x, vec![1.0, 2.0, 0.0]);
}

#[test]
fn multi_valued_cells_fill_slots_in_order_then_the_pad() {
    let v = cells(&[Some("Comedy|Drama"), Some("Drama"), Some("")]);
    let plan = IdPlan::fit(&spec(Some("|"), false), &v, &[0, 1, 2], "f.csv").unwrap();
    assert_eq!(plan.slots, 2);
    assert_eq!(plan.feature_names(), vec!["genres[0]", "genres[1]"]);
    let x = write(
        &plan,
        &cells(&[Some("Drama|Comedy"), Some(""), Some("|Drama|")]),
    )
    .unwrap();
    assert_eq!(x, vec![2.0, 1.0, ID_PAD, ID_PAD, 2.0, ID_PAD]);
    let e = write(&plan, &cells(&[Some("a|b|c")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("genres") && e.contains("row 0") && e.contains("max_values"),
        "{e}"
    );
    let wide = IdSpec {
        max_values: Some(3),
        ..spec(Some(","), false)
    };
    let plan = IdPlan::fit(&wide, &cells(&[Some("x,y")]), &[0], "f.csv").unwrap();
    assert_eq!(
        write(&plan, &cells(&[Some("y,x,q")])).unwrap(),
        vec![2.0, 1.0, 0.0]
    );
}

#[test]
fn integer_text_stays_integer_and_a_string_in_it_is_an_error() {
    let v = cells(&[Some("3|17"), Some("5")]);
    let plan = IdPlan::fit(&spec(Some("|"), false), &v, &[0, 1], "f.csv").unwrap();
    assert_eq!(plan.values, IdValues::Integer);
    assert_eq!(write(&plan, &v).unwrap(), vec![3.0, 17.0, 5.0, ID_PAD]);
    let e = write(&plan, &cells(&[Some("4"), Some("4|x")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 1") && e.contains("\"x\"") && e.contains("integer"),
        "{e}"
    );
}

#[test]
fn hashed_strings_keep_no_vocabulary_and_fit_the_feature_matrix() {
    let v = cells(&[Some("u1"), Some("u2")]);
    let plan = IdPlan::fit(&spec(None, true), &v, &[0, 1], "f.csv").unwrap();
    assert_eq!(plan.values, IdValues::Hashed);
    let x = write(&plan, &cells(&[Some("u1"), Some("never seen")])).unwrap();
    assert_eq!(x[0], hash_string("u1") as f32);
    assert!(x
        .iter()
        .all(|&v| v >= 0.0 && (v as u64) < ID_VALUES && v.fract() == 0.0));
    assert_ne!(hash_string("u1"), hash_string("u2"));
}

#[test]
fn nulls_are_errors_naming_the_column_and_row() {
    let v = cells(&[Some("a"), None]);
    let e = IdPlan::fit(&spec(None, false), &v, &[0, 1], "f.csv")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'genres'") && e.contains("row 1") && e.contains("null"),
        "{e}"
    );
    let plan = IdPlan::fit(&spec(None, false), &v, &[0], "f.csv").unwrap();
    let e = write(&plan, &v).unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("null"), "{e}");
    // A multi-valued column's null (an empty CSV field) is an empty cell.
    let v = cells(&[Some("a|b"), None]);
    let plan = IdPlan::fit(&spec(Some("|"), false), &v, &[0, 1], "f.csv").unwrap();
    assert_eq!(write(&plan, &v).unwrap(), vec![1.0, 2.0, ID_PAD, ID_PAD]);
}

#[test]
fn integers_are_digits_below_two_to_the_24() {
    assert_eq!(parse_integer("0"), Some(0));
    assert_eq!(parse_integer("16777215"), Some(16_777_215));
    for bad in ["16777216", "-1", "+1", "1.0", "", " 1", "1e3"] {
        assert_eq!(parse_integer(bad), None, "{bad}");
    }
}
