"""The proposal's experiments A-D (`python -m mobile_pirl_tf.study`) and the sweep."""
