# A random TinyLlama-1.1B-shaped HF checkpoint (the exporter's tinyllama-siglip-1.5b preset's LLM)
# with a sentencepiece tokenizer, for llama.cpp's converter. PYTHONPATH=tools/export python3 mk_hf.py OUT
import sys, torch, transformers, sentencepiece as spm
from tinyllava_export.presets import get_preset
out = sys.argv[1]
cfg = transformers.LlamaConfig(**get_preset("tinyllama-siglip-1.5b").text)
torch.manual_seed(0)
m = transformers.LlamaForCausalLM(cfg)
m.save_pretrained(out, safe_serialization=True)
text = ["the quick brown fox jumps over the lazy dog %d times and describes the image" % i for i in range(3000)]
spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=out + "/tokenizer",
    vocab_size=300, model_type="bpe", byte_fallback=True)
print("ok")
