//! `ModelSpec`, the manifest's `[job.model]` table, and [`build_model`], which turns it into a
//! [`Network`] for a given input width and class/output count.
//!
//! ```toml
//! [job.model]
//! kind = "cnn"            # linear | logistic | mlp | cnn | kmeans | pca
//! image = [1, 28, 28]     # cnn: channels, height, width of each row's pixels (NCHW)
//! channels = [8, 16]      # cnn: one conv(k x k) + ReLU + 2x2 max pool per entry
//! kernel = 3              # cnn, default 3 (odd)
//! padding = "same"        # cnn: same | valid, default same
//! hidden = [64]           # mlp / cnn: dense hidden layers
//! activation = "relu"     # mlp / cnn hidden layers: relu | tanh, default relu
//! task = "classification" # mlp / cnn: classification (default) | regression
//! classes = 10            # optional; must match the data when given
//! clusters = 10           # kmeans: k (see crate::classic)
//! components = 50         # pca: principal components kept
//! ```

use super::activation::{Activation, ActivationKind};
use super::conv::{Conv2d, ConvGeom};
use super::dense::Dense;
use super::layer::Layer;
use super::pool::{MaxPool2, Permute};
use super::{ClassWeightError, Model, ModelError, Network, SpecError, Task};
use serde::{Deserialize, Serialize};

/// Model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Linear regression (one dense layer, MSE).
    Linear,
    /// Logistic regression (one dense layer; binary or multinomial).
    Logistic,
    /// Multi-layer perceptron.
    Mlp,
    /// Convolutional network: conv/ReLU/pool blocks, then a dense head.
    Cnn,
    /// k-means clustering (Lloyd iterations, k-means++ start; [`crate::classic::KMeans`]).
    Kmeans,
    /// Principal component analysis ([`crate::classic::Pca`]).
    Pca,
    /// Biased matrix factorisation over `embeddings` (see [`super::embedding`]).
    Mf,
    /// An MLP over `embeddings` and the dense features, plus per-id biases.
    #[serde(rename = "wide_deep")]
    WideDeep,
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationName {
    /// ReLU (He init).
    Relu,
    /// tanh (Xavier init).
    Tanh,
}

/// What an MLP or CNN predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskName {
    /// Class labels (softmax, or sigmoid for two classes).
    Classification,
    /// Real values (MSE).
    Regression,
}

/// Convolution padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Output keeps the input's size (`k / 2` zeros each side).
    Same,
    /// No padding.
    Valid,
}

/// The `[job.model]` table. Fields that do not apply to `kind` are an error when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model family.
    pub kind: ModelKind,
    /// Dense hidden layer widths (mlp, cnn).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<usize>,
    /// Hidden activation (mlp, cnn), default relu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationName>,
    /// Class count; when given it must match the data's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Task of an mlp or cnn, default classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskName>,
    /// Image shape `[channels, height, width]` (cnn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<[usize; 3]>,
    /// Filters per conv block (cnn).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<usize>,
    /// Kernel size (cnn), default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<usize>,
    /// Padding (cnn), default same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Padding>,
    /// Per-class weights of the training loss (classification): `"balanced"` or a table from
    /// class name to weight. Held-out metrics stay unweighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weight: Option<ClassWeight>,
    /// Clusters (kmeans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
    /// Principal components kept (pca).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<usize>,
    /// Embedding tables (mf, wide_deep): `[[job.model.embeddings]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<super::embedding::EmbeddingSpec>,
    /// How the tables' rows are updated (mf, wide_deep), default SGD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_optimizer: Option<super::embedding::TableOptimizerSpec>,
}

/// `class_weight`: `"balanced"` (`n / (classes * n_c)` from the training split, as
/// scikit-learn's) or a table `{ class = weight }` (classes left out weigh 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeight {
    /// `"balanced"`.
    Named(String),
    /// Class name to weight.
    Table(std::collections::BTreeMap<String, f32>),
}

// Weights are validated finite (no NaN), so equality is an equivalence.
impl Eq for ClassWeight {}

impl ClassWeight {
    /// The weight of each class (`classes` in label order) given the training rows per class,
    /// or the [`ClassWeightError`] naming the problem.
    ///
    /// # Errors
    /// An unknown name or class, a weight that is not positive and finite, or `balanced` with a
    /// class that has no training row.
    pub fn weights(
        &self,
        classes: &[String],
        counts: &[u64],
    ) -> Result<Vec<f32>, ClassWeightError> {
        match self {
            ClassWeight::Named(n) if n == "balanced" => {
                let total: u64 = counts.iter().sum();
                let k = classes.len().max(1) as f64;
                classes
                    .iter()
                    .zip(counts)
                    .map(|(c, &n)| match n {
                        0 => Err(ClassWeightError::NoRows { class: c.clone() }),
                        n => Ok((total as f64 / (k * n as f64)) as f32),
                    })
                    .collect()
            }
            ClassWeight::Named(n) => Err(ClassWeightError::Name { name: n.clone() }),
            ClassWeight::Table(t) => {
                if let Some(c) = t.keys().find(|c| !classes.contains(c)) {
                    return Err(ClassWeightError::UnknownClass {
                        class: c.clone(),
                        classes: classes.to_vec(),
                    });
                }
                if let Some((c, w)) = t.iter().find(|(_, w)| !(w.is_finite() && **w > 0.0)) {
                    return Err(ClassWeightError::Weight {
                        class: c.clone(),
                        weight: *w,
                    });
                }
                Ok(classes
                    .iter()
                    .map(|c| t.get(c).copied().unwrap_or(1.0))
                    .collect())
            }
        }
    }
}

impl ModelSpec {
    /// A spec of `kind` with every optional field unset.
    pub fn new(kind: ModelKind) -> Self {
        ModelSpec {
            kind,
            hidden: Vec::new(),
            activation: None,
            classes: None,
            task: None,
            image: None,
            channels: Vec::new(),
            kernel: None,
            class_weight: None,
            padding: None,
            clusters: None,
            components: None,
            embeddings: Vec::new(),
            table_optimizer: None,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            ModelKind::Linear => "linear",
            ModelKind::Logistic => "logistic",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
            ModelKind::Kmeans => "kmeans",
            ModelKind::Pca => "pca",
            ModelKind::Mf => "mf",
            ModelKind::WideDeep => "wide_deep",
        }
    }

    /// Names of fields set that `kind` does not use.
    pub(crate) fn stray_fields(&self) -> Vec<&'static str> {
        let (dense, cnn) = match self.kind {
            ModelKind::Linear
            | ModelKind::Logistic
            | ModelKind::Kmeans
            | ModelKind::Pca
            | ModelKind::Mf => (false, false),
            ModelKind::Mlp | ModelKind::WideDeep => (true, false),
            ModelKind::Cnn => (true, true),
        };
        let embed = matches!(self.kind, ModelKind::Mf | ModelKind::WideDeep);
        let mut out = Vec::new();
        let mut check = |set: bool, allowed: bool, name| {
            if set && !allowed {
                out.push(name)
            }
        };
        check(!self.hidden.is_empty(), dense, "hidden");
        check(self.activation.is_some(), dense, "activation");
        check(self.task.is_some(), dense, "task");
        let classic = matches!(self.kind, ModelKind::Kmeans | ModelKind::Pca);
        check(
            self.classes.is_some(),
            self.kind != ModelKind::Linear && !classic,
            "classes",
        );
        check(
            self.clusters.is_some(),
            self.kind == ModelKind::Kmeans,
            "clusters",
        );
        check(
            self.components.is_some(),
            self.kind == ModelKind::Pca,
            "components",
        );
        check(self.image.is_some(), cnn, "image");
        check(!self.channels.is_empty(), cnn, "channels");
        check(self.kernel.is_some(), cnn, "kernel");
        check(self.padding.is_some(), cnn, "padding");
        check(!self.embeddings.is_empty(), embed, "embeddings");
        check(self.table_optimizer.is_some(), embed, "table_optimizer");
        check(self.class_weight.is_some(), !embed, "class_weight");
        out
    }

    fn task_for(&self, classes_or_outputs: usize) -> Result<Task, ModelError> {
        if classes_or_outputs == 0 {
            return Err(SpecError::NoOutputs {
                model: self.kind_name(),
            }
            .into());
        }
        if let Some(c) = self.classes.filter(|&c| c != classes_or_outputs) {
            return Err(SpecError::Classes {
                model: self.kind_name(),
                classes: c,
                data: classes_or_outputs,
            }
            .into());
        }
        let regression = match self.kind {
            ModelKind::Linear => true,
            ModelKind::Logistic => false,
            _ => self.task == Some(TaskName::Regression),
        };
        Ok(match regression {
            true => Task::Regression {
                outputs: classes_or_outputs,
            },
            false => Task::classification(classes_or_outputs),
        })
    }
}

/// Build the model `spec` describes for rows of `input_dim` features and `classes_or_outputs`
/// classes (classification) or outputs (regression), initialised from `seed`.
///
/// # Errors
/// [`ModelError::Spec`] naming the field: a field `kind` does not use, a class count that
/// disagrees with the data, a CNN image shape whose size is not `input_dim`, a kernel that does
/// not fit, zero-width layers.
pub fn build_model(
    spec: &ModelSpec,
    input_dim: usize,
    classes_or_outputs: usize,
    seed: u64,
) -> Result<Box<dyn Model>, ModelError> {
    let kind = spec.kind_name();
    let stray = spec.stray_fields();
    if !stray.is_empty() {
        return Err(SpecError::StrayFields {
            model: kind,
            fields: stray,
        }
        .into());
    }
    if input_dim == 0 {
        return Err(SpecError::NoFeatures { model: kind }.into());
    }
    if spec.hidden.contains(&0) || spec.channels.contains(&0) {
        return Err(SpecError::ZeroWidth { model: kind }.into());
    }
    if matches!(spec.kind, ModelKind::Mf | ModelKind::WideDeep) {
        return Err(SpecError::EmbeddingKind { model: kind }.into());
    }
    let required = |key| SpecError::Required { model: kind, key };
    match spec.kind {
        ModelKind::Kmeans => {
            let k = spec.clusters.ok_or_else(|| required("clusters = K"))?;
            let start = vec![0.0; k * input_dim];
            return Ok(Box::new(crate::classic::KMeans::new(k, input_dim, &start)?));
        }
        ModelKind::Pca => {
            let k = spec.components.ok_or_else(|| required("components = K"))?;
            return Ok(Box::new(crate::classic::Pca::new(k, input_dim)?));
        }
        _ => {}
    }
    let task = spec.task_for(classes_or_outputs)?;
    let act = match spec.activation.unwrap_or(ActivationName::Relu) {
        ActivationName::Relu => ActivationKind::Relu,
        ActivationName::Tanh => ActivationKind::Tanh,
    };
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut width = input_dim;
    if spec.kind == ModelKind::Cnn {
        width = conv_stack(spec, input_dim, &mut layers)?;
    }
    for &h in &spec.hidden {
        layers.push(Box::new(match act {
            ActivationKind::Relu => Dense::he(width, h),
            ActivationKind::Tanh => Dense::xavier(width, h),
        }));
        layers.push(Box::new(Activation::new(act, h)));
        width = h;
    }
    layers.push(Box::new(Dense::xavier(width, task.out_dim())));
    Ok(Box::new(Network::new(kind, layers, task, seed)?))
}

/// Push the conv blocks of a CNN spec; returns the flattened width they produce.
fn conv_stack(
    spec: &ModelSpec,
    input_dim: usize,
    layers: &mut Vec<Box<dyn Layer>>,
) -> Result<usize, ModelError> {
    let Some([c, h, w]) = spec.image else {
        return Err(SpecError::Required {
            model: "cnn",
            key: "image = [channels, height, width]",
        }
        .into());
    };
    if c * h * w != input_dim {
        return Err(SpecError::ImageSize {
            image: [c, h, w],
            features: input_dim,
        }
        .into());
    }
    if spec.channels.is_empty() {
        return Err(SpecError::NoConvBlock.into());
    }
    let k = spec.kernel.unwrap_or(3);
    if k % 2 != 1 {
        return Err(SpecError::EvenKernel { kernel: k }.into());
    }
    let pad = match spec.padding.unwrap_or(Padding::Same) {
        Padding::Same => k / 2,
        Padding::Valid => 0,
    };
    if c > 1 {
        layers.push(Box::new(Permute::to_channel_major(c, h * w)));
    }
    let (mut c, mut h, mut w) = (c, h, w);
    for (i, &f) in spec.channels.iter().enumerate() {
        let g = ConvGeom {
            c_in: c,
            h,
            w,
            k,
            pad,
        };
        if g.ho() < 2 || g.wo() < 2 {
            return Err(SpecError::PoolTooSmall {
                block: i,
                kernel: k,
                height: h,
                width: w,
            }
            .into());
        }
        let conv = Conv2d::new(g, f);
        let out = conv.out_features();
        layers.push(Box::new(conv));
        layers.push(Box::new(Activation::new(ActivationKind::Relu, out)));
        layers.push(Box::new(MaxPool2::new(f, g.ho(), g.wo())));
        (c, h, w) = (f, g.ho() / 2, g.wo() / 2);
    }
    layers.push(Box::new(Permute::flatten(c, h * w)));
    Ok(c * h * w)
}
