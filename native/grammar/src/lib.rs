//! Structured-output constraints for tinyllava-serve: llguidance behind a small napi-rs API.
//!
//! One `GrammarTokenizer` per model (the token trie from the package's tokenizer.json, padded to
//! the decoder's logit rows), one `CompiledGrammar` per distinct constraint (cached by the
//! caller), one `GrammarMatcher` per generated sequence. Everything that may take more than a
//! few microseconds (loading the trie, compiling, computing a mask) runs as an AsyncTask on the
//! libuv thread pool, so the event loop only ever consumes tokens and applies finished masks.
//! The src/engine/grammar-native.ts module is the only user of this API.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv};
use llguidance::{Matcher, ParserFactory};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use toktrie_hf_tokenizers::ByteTokenizer;

fn err(message: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, message.to_string())
}

/// Runs `f`, turning a panic inside the tokenizer or grammar code into an error: a bad
/// tokenizer.json or grammar must fail one call, not abort the server.
fn guarded<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(format!("{e:#}"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(err(format!("{what}: {msg}")))
        }
    }
}

// ---- tokenizer -------------------------------------------------------------------------------

pub struct Shared {
    env: TokEnv,
    factory: ParserFactory,
    /// Logit rows of the decoder; may be more than the tokenizer's tokens (phi-2: 51200).
    logit_rows: usize,
}

/// The token trie of one model, and the factory that compiles grammars against it.
#[napi]
pub struct GrammarTokenizer {
    shared: Arc<Shared>,
}

pub struct LoadTokenizer {
    path: String,
    logit_rows: u32,
    stop_tokens: Vec<u32>,
}

impl Task for LoadTokenizer {
    type Output = Arc<Shared>;
    type JsValue = GrammarTokenizer;

    fn compute(&mut self) -> Result<Self::Output> {
        let logit_rows = self.logit_rows as usize;
        let stop_tokens = std::mem::take(&mut self.stop_tokens);
        let path = std::mem::take(&mut self.path);
        guarded("loading the tokenizer", move || {
            let json = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            let mut tok = ByteTokenizer::from_json_bytes(&json)?;
            let size = tok.tokrx_info().vocab_size as usize;
            if let Some(&bad) = stop_tokens.iter().find(|&&t| t as usize >= size) {
                anyhow::bail!("stop token {bad} is outside the tokenizer's {size} tokens");
            }
            if !stop_tokens.is_empty() {
                tok.set_eos_tokens(&stop_tokens);
            }
            // Rows past the tokenizer become special placeholder tokens that no grammar allows;
            // a tokenizer larger than the logits keeps its size (the extra ids are never sampled).
            let env = tok.into_tok_env(Some(logit_rows.max(size)))?;
            let mut factory = ParserFactory::new_simple(&env)?;
            factory.quiet();
            Ok(Arc::new(Shared { env, factory, logit_rows }))
        })
    }

    fn resolve(&mut self, _env: Env, shared: Self::Output) -> Result<Self::JsValue> {
        Ok(GrammarTokenizer { shared })
    }
}

/// Builds the token trie from a HF tokenizer.json file (byte-level BPE or SentencePiece with
/// byte fallback), reading it on the pool thread too. `stopTokens` are the ids that end
/// generation: the grammar allows them exactly where it accepts.
#[napi(ts_return_type = "Promise<GrammarTokenizer>")]
pub fn load_tokenizer(tokenizer_path: String, logit_rows: u32, stop_tokens: Vec<u32>) -> AsyncTask<LoadTokenizer> {
    AsyncTask::new(LoadTokenizer { path: tokenizer_path, logit_rows, stop_tokens })
}

pub struct Compile {
    shared: Arc<Shared>,
    kind: String,
    source: String,
}

impl Task for Compile {
    type Output = Matcher;
    type JsValue = CompiledGrammar;

    fn compute(&mut self) -> Result<Self::Output> {
        let shared = self.shared.clone();
        let kind = std::mem::take(&mut self.kind);
        let source = std::mem::take(&mut self.source);
        guarded("compiling the grammar", move || {
            let grammar = match kind.as_str() {
                "json_schema" => TopLevelGrammar::from_json_schema(serde_json::from_str(&source)?),
                "regex" => TopLevelGrammar::from_regex(&source),
                "lark" => TopLevelGrammar::from_lark(source),
                other => anyhow::bail!("unknown grammar kind {other:?}"),
            };
            let parser = shared.factory.create_parser(grammar)?;
            let mut matcher = Matcher::new(Ok(parser));
            // The first mask builds the lexer's initial states; computing it here, off the event
            // loop, also surfaces grammars that fail at their first step as compile errors.
            matcher.compute_mask()?;
            Ok(matcher)
        })
    }

    fn resolve(&mut self, _env: Env, template: Self::Output) -> Result<Self::JsValue> {
        Ok(CompiledGrammar { shared: self.shared.clone(), template })
    }
}

#[napi]
impl GrammarTokenizer {
    /// Compiles a constraint: `kind` is "json_schema" (source: the schema as JSON text), "regex"
    /// (Rust regex syntax, matched in full) or "lark" (llguidance's Lark dialect).
    #[napi(ts_return_type = "Promise<CompiledGrammar>")]
    pub fn compile(&self, kind: String, source: String) -> AsyncTask<Compile> {
        AsyncTask::new(Compile { shared: self.shared.clone(), kind, source })
    }

    /// Tokens in the trie: max(tokenizer size, logit rows).
    #[napi(getter)]
    pub fn vocab_size(&self) -> u32 {
        self.shared.env.tok_trie().vocab_size() as u32
    }

    /// The bytes the trie holds for a token (special tokens start with 0xFF).
    #[napi]
    pub fn token_bytes(&self, id: u32) -> Result<Buffer> {
        let trie = self.shared.env.tok_trie();
        if id as usize >= trie.vocab_size() {
            return Err(err(format!("token {id} is outside the vocabulary")));
        }
        Ok(trie.token(id).to_vec().into())
    }
}

// ---- grammars and matchers -------------------------------------------------------------------

/// A compiled constraint; each sequence takes a matcher of its own from it.
#[napi]
pub struct CompiledGrammar {
    shared: Arc<Shared>,
    template: Matcher,
}

#[napi]
impl CompiledGrammar {
    /// A fresh matcher at the grammar's start. It shares the compiled lexer (and its caches)
    /// with the other matchers of this grammar.
    #[napi]
    pub fn matcher(&self) -> GrammarMatcher {
        GrammarMatcher {
            state: Arc::new(Mutex::new(MatcherState { matcher: self.template.clone(), mask: None })),
            logit_rows: self.shared.logit_rows,
            stop_tokens: self.shared.env.tok_trie().eos_tokens().to_vec(),
        }
    }
}

struct MatcherState {
    matcher: Matcher,
    /// The allowed tokens at the current position, once computed.
    mask: Option<SimpleVob>,
}

/// One sequence's position in its grammar.
#[napi]
pub struct GrammarMatcher {
    state: Arc<Mutex<MatcherState>>,
    logit_rows: usize,
    stop_tokens: Vec<u32>,
}

fn lock(state: &Mutex<MatcherState>) -> MutexGuard<'_, MatcherState> {
    // A panic while holding the lock is caught by `guarded`; the state is still usable.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct ComputeMask {
    state: Arc<Mutex<MatcherState>>,
}

impl Task for ComputeMask {
    type Output = f64;
    type JsValue = f64;

    fn compute(&mut self) -> Result<Self::Output> {
        let start = std::time::Instant::now();
        let mut s = lock(&self.state);
        let mask = guarded("computing the token mask", || s.matcher.compute_mask_or_eos())?;
        s.mask = Some(mask);
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    }

    fn resolve(&mut self, _env: Env, ms: Self::Output) -> Result<Self::JsValue> {
        Ok(ms)
    }
}

#[napi]
impl GrammarMatcher {
    /// Computes the mask of the current position on the libuv thread pool; resolves with the
    /// milliseconds it took there (lock wait included).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn compute_mask(&self) -> AsyncTask<ComputeMask> {
        AsyncTask::new(ComputeMask { state: self.state.clone() })
    }

    /// Advances by one token (which the current mask allowed); returns true when the grammar is
    /// now complete and allows nothing but a stop token. The mask is stale until recomputed.
    #[napi]
    pub fn consume(&self, token: u32) -> Result<bool> {
        let mut s = lock(&self.state);
        s.mask = None;
        guarded("advancing the grammar", || s.matcher.consume_token(token))?;
        Ok(s.matcher.is_stopped())
    }

    /// Sets every logit the grammar does not allow at this position to -Infinity, in place. The
    /// row may be shorter than the trie (a tokenizer larger than the logits) or longer (never:
    /// the trie covers every row). With `allowStop` false, stop tokens are masked out too.
    /// Returns the number of tokens left allowed.
    #[napi]
    pub fn apply_mask(&self, mut logits: Float32ArraySlice, allow_stop: bool) -> Result<u32> {
        let s = lock(&self.state);
        let mask = s.mask.as_ref().ok_or_else(|| err("the mask was not computed for this position"))?;
        // SAFETY: the slice is a view of a JS Float32Array that nothing else touches during this
        // synchronous call.
        let row = unsafe { logits.as_mut() };
        if row.len() > self.logit_rows.max(mask.len()) {
            return Err(err(format!("a row of {} logits for a vocabulary of {}", row.len(), mask.len())));
        }
        let words = mask.as_slice();
        let mut allowed = 0u32;
        for (w, chunk) in row.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX && chunk.len() == 32 {
                allowed += 32;
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                if bits & (1 << j) == 0 {
                    *x = f32::NEG_INFINITY;
                } else {
                    allowed += 1;
                }
            }
        }
        if !allow_stop {
            for &t in &self.stop_tokens {
                if let Some(x) = row.get_mut(t as usize) {
                    if *x != f32::NEG_INFINITY {
                        *x = f32::NEG_INFINITY;
                        allowed -= 1;
                    }
                }
            }
        }
        Ok(allowed)
    }

    /// Whether a stop token would be accepted here (the output so far is complete).
    #[napi]
    pub fn is_accepting(&self) -> Result<bool> {
        let mut s = lock(&self.state);
        guarded("checking the grammar", || s.matcher.is_accepting())
    }

    /// Whether the grammar is complete (nothing but a stop token can follow) or failed.
    #[napi(getter)]
    pub fn stopped(&self) -> bool {
        lock(&self.state).matcher.is_stopped()
    }
}
