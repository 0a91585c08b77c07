"""Package-internal loaders behind `softlabel_ood.datasets`; import that module instead.

One file per kind of source, each kind a `common.Source` that a record of `datasets` holds:
`tfds_source` (TensorFlow Datasets), `local_files` (.npy/.npz files, image folders), `idx_files`
(MNIST-format IDX files, else tfds), `synthetic` (noise OOD sets), `embedded` (sets shipped with
scikit-learn); `common` / `images` for what they share.
"""
