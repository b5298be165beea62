"""Visual question answering (the paper's third task): VQA-RAD and SLAKE, a co-attention answer
model on the pipeline's encoders, scored without leaks."""
