"""Evaluation of voice -> face: metrics, baselines, the results table and the report.

Model-independent: numpy arrays in, numbers and tables out. Modules:

- :mod:`.metrics` — image (MSE, PSNR, SSIM), latent (MSE, cosine), identity retrieval
  (R@k, mean rank, chance) and 1:2 matching.
- :mod:`.attributes` — sex / age / emotion probes fitted on real training latents; expression
  clustering (002 section 5.2.1).
- :mod:`.baselines` — mean face, random training speaker, mean face of the speaker's sex.
- :mod:`.scoring` — :func:`evaluate_prediction`, the one code path for every table row.
- :mod:`.report` — results table, metrics.json dict, per-clip table, plot data, report.md.
- :mod:`.face_descriptors` — dlib 128-d descriptors of small crops (imports dlib; not
  re-exported here so that the rest loads without it).

The ``evaluate`` stage itself (not re-exported: it loads the models): :mod:`.encode` (models,
batched inference), :mod:`.grids` (image grids), :mod:`.stage` (orchestration).
"""

from pipeline.evaluation.attributes import (
    AttributeProbes,
    AttributeResult,
    ClusteringResult,
    attribute_chance,
    attribute_metrics,
    cluster_accuracy,
    fit_attribute_probes,
    subtract_group_mean,
)
from pipeline.evaluation.baselines import (
    MEAN_FACE,
    ORACLE,
    RANDOM_SPEAKER,
    SEX_MEAN_FACE,
    baseline_predictions,
    mean_face,
    random_speaker_face,
    sex_mean_face,
)
from pipeline.evaluation.metrics import (
    Gallery,
    ImageMetrics,
    LatentMetrics,
    MatchingResult,
    RetrievalResult,
    SpeakerScores,
    image_metrics,
    latent_metrics,
    matching_1of2,
    retrieval_metrics,
    score_speakers,
    similarity_matrix,
    speaker_gallery,
)
from pipeline.evaluation.report import (
    confusion_rows,
    markdown_table,
    per_clip_table,
    rank_histogram,
    render_report,
    results_json,
    results_table,
)
from pipeline.evaluation.scoring import HeldOut, Prediction, RowResult, evaluate_prediction

__all__ = [
    "MEAN_FACE",
    "ORACLE",
    "RANDOM_SPEAKER",
    "SEX_MEAN_FACE",
    "AttributeProbes",
    "AttributeResult",
    "ClusteringResult",
    "Gallery",
    "HeldOut",
    "ImageMetrics",
    "LatentMetrics",
    "MatchingResult",
    "Prediction",
    "RetrievalResult",
    "RowResult",
    "SpeakerScores",
    "attribute_chance",
    "attribute_metrics",
    "baseline_predictions",
    "cluster_accuracy",
    "confusion_rows",
    "evaluate_prediction",
    "fit_attribute_probes",
    "image_metrics",
    "latent_metrics",
    "markdown_table",
    "matching_1of2",
    "mean_face",
    "per_clip_table",
    "random_speaker_face",
    "rank_histogram",
    "render_report",
    "results_json",
    "results_table",
    "retrieval_metrics",
    "score_speakers",
    "sex_mean_face",
    "similarity_matrix",
    "speaker_gallery",
    "subtract_group_mean",
]
