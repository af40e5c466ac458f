"""FAIR (Ali et al., WACV 2026) — the framework-free core: class descriptions, Class Description Anchors, crops,
the Learned Alignment Score, pseudo-labels with ambiguity-aware weights, the loss and the two views
(methods/FAIR.md)."""
from .cda import ClassDescriptionAnchors, description_embeddings, description_weights, pad_descriptions
from .crops import RandomSquareCrops, crop_image, crop_weights, encode_with_crops, sample_image_boxes
from .descriptions import (DEFAULT_SOURCES, DescriptionsError, get_descriptions, load_description_file,
                           match_descriptions, normalize_classname, template_descriptions)
from .las import las_scores, pooled_crop_feature, wca_scores
from .model import FAIRConfigError, FAIRModel, FAIRSettings, StepOutput, visual_norm_parameters
from .pseudo_labels import (DistributionAlignment, PseudoLabels, ambiguity_weight, fair_loss, fairness_term, fuse,
                            margin_factor, pseudo_labels)
from .views import CropTestDataset, ImageReadError, TwoViewDataset, open_image, strong_transform, weak_transform
