"""ReCLIP (Hu et al., WACV 2024) — the framework-free core: projection space, sparse label propagation,
centroid classifier, the two branches and cross-modality self-training (methods/RECLIP.md)."""
from .branches import ReCLIPText, ReCLIPVisual, text_norm_parameters, visual_norm_parameters
from .centroids import class_centroids
from .label_propagation import PropagationResult, conjugate_gradient, knn_lists, label_propagation, normalized_affinity
from .projection import default_rank, project, projection_basis, projection_matrix
from .self_training import (CENTROID_RULES, LOSS_SCALES, OFFICIAL_RECIPE, OURS_RECIPE, TEXT_TEMPLATE_RULES,
                            PseudoLabelRound, agreement_cross_entropy, agreement_mask, auto_epochs,
                            pseudo_label_round, recipe_name)
