"""Training data from sparse labels: label patches with qlty's border masking, cleaning (only
the windows with labels, decided without gathering any window) and a lazy dataset."""

from .cleaning import CleaningStats, clean_pairs, select_windows, window_label_counts
from .dataset import PatchDataset
from .labels import unstitch_pair
from .sampler import WindowSampler

__all__ = ["CleaningStats", "PatchDataset", "WindowSampler", "clean_pairs", "select_windows",
           "unstitch_pair", "window_label_counts"]
