"""DAC, Domain Aligned CLIP for few-shot classification (Gondal et al., WACV 2024; methods/DAC.md): pure torch."""
from .adapter import IntraModalAdapter, mean_intra_class_cosine, supervised_contrastive_loss
from .cache_model import affinity_logits, cache_keys, cache_logits, cache_values, class_sum
from .model import EPOCH_VIEWS, DACHead, class_index_map, epoch_length, flat_view_index, remap_state_dict, \
    train_on_cache, view_batches
from .search import SearchResult, grid, search_alpha_beta
from .text_modulation import TextModulation

__all__ = ["IntraModalAdapter", "supervised_contrastive_loss", "mean_intra_class_cosine", "cache_keys",
           "cache_logits", "affinity_logits", "class_sum", "cache_values", "DACHead", "class_index_map",
           "remap_state_dict", "train_on_cache", "view_batches", "EPOCH_VIEWS", "epoch_length",
           "flat_view_index", "SearchResult", "grid", "search_alpha_beta", "TextModulation"]
