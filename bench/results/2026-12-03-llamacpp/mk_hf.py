# A random TinyLlama-1.1B-shaped HF checkpoint with a sentencepiece tokenizer, for llama.cpp's converter.
import sys, torch, transformers, sentencepiece as spm
out = sys.argv[1]
cfg = transformers.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048, vocab_size=32000,
    rms_norm_eps=1e-5, tie_word_embeddings=False)
torch.manual_seed(0)
m = transformers.LlamaForCausalLM(cfg)
m.save_pretrained(out, safe_serialization=True)
text = ["the quick brown fox jumps over the lazy dog %d times and describes the image" % i for i in range(3000)]
spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=out + "/tokenizer",
    vocab_size=300, model_type="bpe", byte_fallback=True)
print("ok")
