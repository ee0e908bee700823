"""Images in: files, sources, labelled splits, the PIRL views and the tf.data pipeline."""
