"""Classification, shift-invariance and segmentation metrics (one implementation of each kind)."""
