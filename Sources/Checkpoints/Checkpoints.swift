// Checkpoints
//
// Hugging Face checkpoints: defensive memory-mapped safetensors reading and writing, sharded indexes and config.json.
