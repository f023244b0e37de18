"""Cells: find them in a frame (detect), follow each across frames (tracking), plan the model's views of
each and average them into its call (views, logits), and compare their size with the model's training cells (scale)."""
