"""`fastlstm bench` (see cli.py): fastlstm vs torch.nn.LSTM vs ONNX Runtime on the same weights, in one process.
The research benchmarks live in the repository's bench/ folder, built on these modules."""
