"""Configuration, command-line plumbing, output, records and progress: free of TensorFlow."""
