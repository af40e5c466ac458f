"""DAC, Domain Aligned CLIP for few-shot classification (Gondal et al., WACV 2024; methods/DAC.md): pure torch."""
from .adapter import IntraModalAdapter, mean_intra_class_cosine, supervised_contrastive_loss
from .cache_model import affinity_logits, cache_keys, cache_logits, cache_values, class_sum
from .model import DACHead, class_index_map, remap_state_dict, train_on_cache
from .sampler import EPOCH_VIEWS, SAMPLERS, anchors_with_a_positive, check_sampler, class_view_batches, \
    epoch_batches, epoch_length, flat_view_index, random_view_batches
from .search import TIE_RULE, SearchResult, grid, search_alpha_beta
from .text_modulation import TextModulation

view_batches = random_view_batches  # the former name

__all__ = ["IntraModalAdapter", "supervised_contrastive_loss", "mean_intra_class_cosine", "cache_keys",
           "cache_logits", "affinity_logits", "class_sum", "cache_values", "DACHead", "class_index_map",
           "remap_state_dict", "train_on_cache", "view_batches", "random_view_batches", "EPOCH_VIEWS", "SAMPLERS",
           "epoch_length", "flat_view_index", "class_view_batches", "epoch_batches", "check_sampler",
           "anchors_with_a_positive", "SearchResult", "TIE_RULE", "grid", "search_alpha_beta", "TextModulation"]
