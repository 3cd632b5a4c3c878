//! Evaluation metrics over held-out predictions: accuracy, ROC AUC (ties get average ranks),
//! log loss, mean squared error and R^2. Plain functions over slices, computed in f64.

/// Probabilities are clipped to `[EPS, 1 - EPS]` in log loss (as scikit-learn does for f64).
const EPS: f64 = 1e-15;

/// Index of the largest value in each row of a row-major `rows x cols` matrix (first on ties).
pub fn argmax_rows(scores: &[f32], cols: usize) -> Vec<u32> {
    scores
        .chunks_exact(cols.max(1))
        .map(|row| {
            let mut best = 0;
            for (j, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// Share of `predicted` equal to `labels` (0 for no rows).
pub fn accuracy(predicted: &[u32], labels: &[u32]) -> f64 {
    let n = predicted.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    let hits = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / n as f64
}

/// Binary accuracy: `score >= threshold` predicts 1; labels are 0/1.
pub fn binary_accuracy(scores: &[f32], labels: &[f32], threshold: f32) -> f64 {
    let n = scores.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    let hits = scores
        .iter()
        .zip(labels)
        .filter(|(s, l)| (**s >= threshold) == (**l >= 0.5))
        .count();
    hits as f64 / n as f64
}

/// Area under the ROC curve of `scores` for 0/1 `labels` (Mann-Whitney U with average ranks for
/// tied scores, so ties count one half). `None` when only one class is present.
pub fn roc_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum_pos, mut positives) = (0.0f64, 0usize);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg_rank = (i + j + 2) as f64 / 2.0;
        for &k in &order[i..=j] {
            if labels[k] >= 0.5 {
                rank_sum_pos += avg_rank;
                positives += 1;
            }
        }
        i = j + 1;
    }
    let negatives = n - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, q) = (positives as f64, negatives as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * q))
}

/// Mean binary cross-entropy of probabilities `probs` against 0/1 `labels`.
pub fn log_loss(probs: &[f32], labels: &[f32]) -> f64 {
    let n = probs.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    let total: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, y)| {
            let p = f64::from(*p).clamp(EPS, 1.0 - EPS);
            let y = f64::from(*y);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum();
    total / n as f64
}

/// Mean cross-entropy of row-major class probabilities (`rows x cols`) against class labels.
pub fn multiclass_log_loss(probs: &[f32], cols: usize, labels: &[u32]) -> f64 {
    let rows = labels.len().min(probs.len() / cols.max(1));
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = (0..rows)
        .map(|r| {
            -f64::from(probs[r * cols + labels[r] as usize])
                .clamp(EPS, 1.0)
                .ln()
        })
        .sum();
    total / rows as f64
}

/// Mean squared error.
pub fn mse(predicted: &[f32], targets: &[f32]) -> f64 {
    let n = predicted.len().min(targets.len());
    if n == 0 {
        return 0.0;
    }
    let total: f64 = predicted
        .iter()
        .zip(targets)
        .map(|(p, t)| (f64::from(*p) - f64::from(*t)).powi(2))
        .sum();
    total / n as f64
}

/// Coefficient of determination `1 - SS_res / SS_tot`. For constant targets: 1 for an exact fit,
/// NaN otherwise (R^2 is undefined there); NaN for no rows.
pub fn r2(predicted: &[f32], targets: &[f32]) -> f64 {
    let n = predicted.len().min(targets.len());
    if n == 0 {
        return f64::NAN;
    }
    let mean = targets[..n].iter().map(|t| f64::from(*t)).sum::<f64>() / n as f64;
    let ss_tot: f64 = targets[..n]
        .iter()
        .map(|t| (f64::from(*t) - mean).powi(2))
        .sum();
    let ss_res = mse(&predicted[..n], &targets[..n]) * n as f64;
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { f64::NAN };
    }
    1.0 - ss_res / ss_tot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_with_ties_matches_hand_count() {
        // Pairs (pos, neg): scores pos {0.8, 0.4}, neg {0.4, 0.1}: wins 0.8>0.4, 0.8>0.1, 0.4>0.1,
        // tie 0.4=0.4 counts 1/2 -> 3.5 / 4.
        let auc = roc_auc(&[0.8, 0.4, 0.4, 0.1], &[1.0, 1.0, 0.0, 0.0]).unwrap();
        assert!((auc - 0.875).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.5, 0.5], &[1.0, 0.0]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[1.0, 1.0]), None);
        assert_eq!(roc_auc(&[0.1, 0.9, 0.3], &[0.0, 1.0, 0.0]), Some(1.0));
    }

    #[test]
    fn regression_metrics() {
        let t = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(mse(&t, &t), 0.0);
        assert_eq!(r2(&t, &t), 1.0);
        // Predicting the mean gives R^2 = 0.
        assert!((r2(&[2.5; 4], &t)).abs() < 1e-12);
        assert!((mse(&[0.0, 0.0], &[1.0, 3.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn classification_metrics() {
        assert_eq!(argmax_rows(&[0.1, 0.7, 0.2, 0.5, 0.5, 0.0], 3), vec![1, 0]);
        assert_eq!(accuracy(&[1, 0, 2], &[1, 1, 2]), 2.0 / 3.0);
        assert_eq!(
            binary_accuracy(&[0.9, 0.2, 0.6], &[1.0, 0.0, 0.0], 0.5),
            2.0 / 3.0
        );
        let ll = log_loss(&[0.5, 0.5], &[1.0, 0.0]);
        assert!((ll - std::f64::consts::LN_2).abs() < 1e-7);
        let mll = multiclass_log_loss(&[0.25, 0.5, 0.25], 3, &[1]);
        assert!((mll - std::f64::consts::LN_2).abs() < 1e-7);
    }
}
