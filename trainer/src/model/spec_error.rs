//! [`SpecError`]: why a `[job.model]` table does not build a model for this data, and
//! [`ClassWeightError`]: why its `class_weight` does not fit the label. Each variant names the
//! model kind, the key and the values that disagree; `Display` renders the message a user reads
//! (after "[job.model] " for a [`SpecError`], carried by [`super::ModelError::Spec`]).

/// A `[job.model]` spec (or a hand-built model) that does not fit the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Fields set that this kind does not use.
    #[error("{model}: field(s) {} do not apply to kind = \"{model}\"", fields.join(", "))]
    StrayFields {
        /// The model kind.
        model: &'static str,
        /// The fields.
        fields: Vec<&'static str>,
    },
    /// A key this kind needs and the spec leaves out.
    #[error("{model}: `{key}` is required")]
    Required {
        /// The model kind.
        model: &'static str,
        /// The key, as the user writes it (`clusters = K`).
        key: &'static str,
    },
    /// The data has no feature columns.
    #[error("{model}: the data has no feature columns")]
    NoFeatures {
        /// The model kind.
        model: &'static str,
    },
    /// A `hidden` or `channels` entry of 0.
    #[error("{model}: hidden and channels entries must be positive")]
    ZeroWidth {
        /// The model kind.
        model: &'static str,
    },
    /// An embedding kind handed to the builder of dense models.
    #[error(
        "{model}: an embedding model is built from the data's column names \
         (embedding::build_embedding_model)"
    )]
    EmbeddingKind {
        /// The model kind.
        model: &'static str,
    },
    /// The label gives no classes (classification) or outputs (regression).
    #[error("{model}: the data gives 0 classes/outputs")]
    NoOutputs {
        /// The model kind.
        model: &'static str,
    },
    /// `classes = N` disagrees with the label.
    #[error("{model}: classes = {classes} but the data's label has {data} classes")]
    Classes {
        /// The model kind.
        model: &'static str,
        /// The spec's `classes`.
        classes: usize,
        /// Classes the label has.
        data: usize,
    },
    /// A CNN image shape whose size is not the row's width.
    #[error("cnn: image = [{}, {}, {}] has {} values per row but the data has {features} feature columns", image[0], image[1], image[2], image.iter().product::<usize>())]
    ImageSize {
        /// `[channels, height, width]`.
        image: [usize; 3],
        /// Feature columns in the data.
        features: usize,
    },
    /// A CNN without conv blocks.
    #[error("cnn: `channels` needs at least one conv block")]
    NoConvBlock,
    /// An even CNN kernel.
    #[error("cnn: kernel = {kernel} must be odd")]
    EvenKernel {
        /// The kernel size.
        kernel: usize,
    },
    /// A conv block that leaves too little to pool.
    #[error("cnn: conv block {block}: a {kernel}x{kernel} kernel on {height}x{width} leaves less than 2x2 to pool")]
    PoolTooSmall {
        /// The block's index.
        block: usize,
        /// The kernel size.
        kernel: usize,
        /// The block's input height.
        height: usize,
        /// The block's input width.
        width: usize,
    },
    /// A network without layers.
    #[error("{model}: no layers")]
    NoLayers {
        /// The network's name.
        model: String,
    },
    /// A network whose last layer does not give the task's outputs.
    #[error("{model}: last layer gives {got} outputs, the task needs {need}")]
    OutputWidth {
        /// The network's name.
        model: String,
        /// The last layer's width.
        got: usize,
        /// The task's outputs.
        need: usize,
    },
    /// `class_weight` on a regression.
    #[error("class_weight applies to classification only")]
    ClassWeightTask,
    /// `class_weight` on a model that takes no weights.
    #[error("this model does not support class_weight")]
    ClassWeightModel,
    /// Class weights of another count than the classes.
    #[error("class_weight: {weights} weights for {classes} classes")]
    ClassWeightCount {
        /// Weights given.
        weights: usize,
        /// Classes the model has.
        classes: usize,
    },
    /// k-means with fewer rows in memory than clusters.
    #[error("kmeans: clusters = {clusters} but the training split has {rows} rows in memory (k-means++ starts from them; a dataset streamed from files or a stream keeps none)")]
    KmeansRows {
        /// `clusters`.
        clusters: usize,
        /// Rows in memory.
        rows: usize,
    },
    /// k-means with no clusters, no features or centres of the wrong length.
    #[error(
        "kmeans: clusters = {clusters}, {features} features and {centres} initial centre values"
    )]
    KmeansShape {
        /// `clusters`.
        clusters: usize,
        /// Features per row.
        features: usize,
        /// Initial centre values given.
        centres: usize,
    },
    /// PCA with no components or more than the features.
    #[error("pca: components = {components} must be between 1 and the {features} features")]
    PcaComponents {
        /// `components`.
        components: usize,
        /// Features per row.
        features: usize,
    },
}

/// A `class_weight` that does not fit the label or the training rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClassWeightError {
    /// A name other than `"balanced"`.
    #[error("class_weight = {name:?}: use \"balanced\" or a table of class = weight")]
    Name {
        /// The name given.
        name: String,
    },
    /// `"balanced"` with a class that has no training row.
    #[error("class_weight = \"balanced\": class {class:?} has no training row")]
    NoRows {
        /// The class.
        class: String,
    },
    /// A table naming a class the label does not have.
    #[error("class_weight: {class:?} is not a class of the label (classes: {})", classes.join(", "))]
    UnknownClass {
        /// The class named.
        class: String,
        /// The label's classes.
        classes: Vec<String>,
    },
    /// A weight that is not positive and finite.
    #[error("class_weight: {class} = {weight} must be positive")]
    Weight {
        /// The class.
        class: String,
        /// Its weight.
        weight: f32,
    },
}
