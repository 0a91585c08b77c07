"""Package-internal loaders behind `softlabel_ood.datasets`; import that module instead.

One file per kind of source: `tfds_source` (TensorFlow Datasets), `local_files` (.npy/.npz, image
folders, IDX), `synthetic` (noise OOD sets), `embedded` (sets shipped with scikit-learn), and
`common` / `images` for what they share.
"""
