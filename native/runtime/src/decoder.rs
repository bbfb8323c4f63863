//! One batched decoder step with the KV cache in native (or device) memory, for both decoder
//! forms of docs/model-package.md:
//!
//! - `standard`: past_key_values.{i}.* [B,Hkv,P,Dh] are the rows of one KV block fed in place
//!   (P = the block's capacity, each row's unused tail masked out by attention_mask),
//!   present.{i}.* [B,Hkv,T,Dh] are bound to a scratch buffer on the device and their real
//!   positions appended to the block afterwards.
//! - `shared_kv`: GroupQueryAttention over one buffer that is both past and present
//!   ([B,Hkv,cap,Dh], written in place at each row's seqlens_k). The op allows T > 1 only for
//!   B = 1, so every row with several new positions runs alone through a B=1 view of its block
//!   row, and the rows with one new position run together over consecutive rows of one block.
//!
//! Token ids are embedded here (embed_tokens runs into device memory), so per step the only
//! bytes that go back to JS are the logits rows, written straight into the caller's array.

use std::ffi::CString;
use std::rc::Rc;

use crate::device::{as_bytes, Buffer, Copy2d, Device};
use crate::ffi::{self, Elem, Value};
use crate::kv::{KvArena, KvError, KvLayout, KvResult};
use crate::session::Graph;

pub struct Settings {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub capacity_bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    Standard,
    /// `position_ids`: whether the graph declares that input (rotary outside the attention op).
    SharedKv { position_ids: bool },
}

pub struct Row<'a> {
    pub seq: u32,
    pub ids: Option<&'a [i32]>,
    pub embeds: Option<&'a [f32]>,
}

/// What crossed between JS, the host and the device, summed over all steps.
#[napi_derive::napi(object)]
#[derive(Default, Clone, Copy)]
pub struct Counters {
    pub steps: f64,
    pub decoder_runs: f64,
    /// Bytes written into JS memory (the logits rows).
    pub bytes_to_js: f64,
    /// Bytes read from JS memory (token ids, ready embeddings).
    pub bytes_from_js: f64,
    /// Bytes ORT copies host -> device / device -> host for the step's bound tensors (0 on CPU).
    pub host_to_device_bytes: f64,
    pub device_to_host_bytes: f64,
}

struct Names {
    past: Vec<CString>,    // [layer * 2 + kind]
    present: Vec<CString>, // [layer * 2 + kind]
}

pub struct Decoder {
    graph: Rc<Graph>,
    embed: Rc<Graph>,
    device: Rc<Device>,
    pub form: Form,
    pub arena: KvArena,
    hidden: usize,
    vocab: usize,
    names: Names,
    pub counters: Counters,
}

/// A row's place in the step: its index in the request, its new positions, where its
/// embeddings come from.
struct Planned<'a> {
    index: usize,
    seq: u32,
    count: usize,
    /// Offset (in positions) of its ids' embeddings in this step's embed_tokens output.
    embedded_at: Option<usize>,
    embeds: Option<&'a [f32]>,
}

const KNOWN_INPUTS: &[&str] = &["inputs_embeds", "attention_mask", "position_ids", "seqlens_k", "total_sequence_length"];

fn c(name: &str) -> CString {
    CString::new(name).expect("static names have no NUL")
}

impl Decoder {
    pub fn new(graph: Rc<Graph>, embed: Rc<Graph>, s: Settings) -> Result<Decoder, String> {
        let has = |n: &str| graph.input(n).is_some();
        let form = if has("seqlens_k") || has("total_sequence_length") {
            for n in ["seqlens_k", "total_sequence_length", "inputs_embeds"] {
                if !has(n) {
                    return Err(format!("{}: a shared_kv decoder needs the input {n}", graph.path));
                }
            }
            Form::SharedKv { position_ids: has("position_ids") }
        } else {
            Form::Standard
        };
        let mut names = Names { past: Vec::new(), present: Vec::new() };
        for l in 0..s.layers {
            for kind in ["key", "value"] {
                names.past.push(c(&format!("past_key_values.{l}.{kind}")));
                names.present.push(c(&format!("present.{l}.{kind}")));
            }
        }
        // The graph's own input names decide what is fed: refuse any we would not feed.
        for io in &graph.inputs {
            let past = names.past.iter().any(|n| n.to_bytes() == io.name.as_bytes());
            if !past && !KNOWN_INPUTS.contains(&io.name.as_str()) {
                return Err(format!("{}: unexpected decoder input {:?}", graph.path, io.name));
            }
        }
        for (past, present) in names.past.iter().zip(&names.present) {
            let (past, present) = (past.to_str().expect("ascii"), present.to_str().expect("ascii"));
            if graph.input(past).is_none() || graph.output(present).is_none() {
                return Err(format!("{}: the decoder lacks {past} or {present} for num_layers={} in manifest.json", graph.path, s.layers));
            }
        }
        if form == Form::Standard {
            for n in ["attention_mask", "position_ids", "inputs_embeds"] {
                if !has(n) {
                    return Err(format!("{}: a standard decoder needs the input {n}", graph.path));
                }
            }
        }
        let kv_elem = graph.input("past_key_values.0.key").and_then(|io| io.elem).ok_or_else(|| format!("{}: past_key_values.0.key must be float32 or float16", graph.path))?;
        if !matches!(kv_elem, Elem::F32 | Elem::F16) {
            return Err(format!("{}: past_key_values.0.key must be float32 or float16", graph.path));
        }
        if graph.input("inputs_embeds").and_then(|io| io.elem) != Some(Elem::F32) || graph.output("logits").and_then(|io| io.elem) != Some(Elem::F32) {
            return Err(format!("{}: inputs_embeds and logits must be float32", graph.path));
        }
        if embed.output("inputs_embeds").and_then(|io| io.elem) != Some(Elem::F32) || embed.input("input_ids").and_then(|io| io.elem) != Some(Elem::I64) {
            return Err(format!("{}: embed_tokens must map int64 input_ids to float32 inputs_embeds", embed.path));
        }
        let device = graph.device.clone();
        let layout = KvLayout { layers: s.layers, heads: s.kv_heads, head_dim: s.head_dim, elem: kv_elem };
        Ok(Decoder {
            arena: KvArena::new(layout, s.capacity_bytes, device.clone()),
            graph,
            embed,
            device,
            form,
            hidden: s.hidden,
            vocab: s.vocab,
            names,
            counters: Counters::default(),
        })
    }

    /// One step: `logits` receives [B, V], the last real position of each row, in request order.
    pub fn step(&mut self, rows: &[Row], logits: &mut [f32]) -> KvResult<()> {
        let (b, d, v) = (rows.len(), self.hidden, self.vocab);
        if b == 0 {
            return Err("decoder step: no rows".to_string().into());
        }
        if logits.len() != b * v {
            return Err(format!("decoder step: the logits array has {} values, expected {b}x{v}", logits.len()).into());
        }
        let mut planned = Vec::with_capacity(b);
        for (index, r) in rows.iter().enumerate() {
            let count = match (r.embeds, r.ids) {
                (Some(e), _) => {
                    if e.is_empty() || e.len() % d != 0 {
                        return Err(format!("decoder step: sequence {} has {} embedding values, not a multiple of {d}", r.seq, e.len()).into());
                    }
                    e.len() / d
                }
                (None, Some(ids)) if !ids.is_empty() => ids.len(),
                _ => return Err(format!("decoder step: sequence {} has no new positions", r.seq).into()),
            };
            self.arena.length(r.seq)?; // unknown sequences fail before any work
            planned.push(Planned { index, seq: r.seq, count, embedded_at: None, embeds: r.embeds });
        }
        let groups: Vec<Vec<usize>> = match self.form {
            Form::Standard => vec![(0..b).collect()],
            // One group of every single-position row, then each longer row alone.
            Form::SharedKv { .. } => {
                let mut g = vec![(0..b).filter(|&i| planned[i].count == 1).collect::<Vec<_>>()];
                g.extend((0..b).filter(|&i| planned[i].count > 1).map(|i| vec![i]));
                g.retain(|g| !g.is_empty());
                g
            }
        };
        // Embed every id row in one embed_tokens call, in group order, so that a group of id
        // rows with the same count is one contiguous slice of its output.
        let mut ids: Vec<i64> = Vec::new();
        for &i in groups.iter().flatten() {
            if planned[i].embeds.is_none() {
                planned[i].embedded_at = Some(ids.len());
                ids.extend(rows[i].ids.expect("checked above").iter().map(|&x| x as i64));
            }
        }
        self.counters.bytes_from_js += rows.iter().map(|r| r.ids.map_or(0, |x| x.len() * 4) + r.embeds.map_or(0, |x| x.len() * 4)).sum::<usize>() as f64;
        let embedded = self.embed_ids(&ids)?;
        for group in &groups {
            let g: Vec<&Planned> = group.iter().map(|&i| &planned[i]).collect();
            match self.form {
                Form::Standard => self.run_standard(&g, &embedded, logits)?,
                Form::SharedKv { position_ids } => self.run_shared(&g, &embedded, logits, position_ids)?,
            }
        }
        self.counters.steps += 1.0;
        self.counters.bytes_to_js += (b * v * 4) as f64;
        Ok(())
    }

    /// embed_tokens over `ids` ([1, N] -> [1, N, D] in device memory).
    fn embed_ids(&mut self, ids: &[i64]) -> KvResult<Buffer> {
        let d = self.hidden;
        let out = self.device.alloc_zeroed(ids.len() * d * 4)?;
        if ids.is_empty() {
            return Ok(out);
        }
        let n = ids.len() as i64;
        // SAFETY: `ids` is [1, N] i64 and `out` holds [1, N, D] f32; both outlive the run.
        let input = unsafe { Value::over(&self.device.host, ids.as_ptr() as *mut _, Elem::I64, &[1, n])? };
        let output = unsafe { Value::over(&self.device.mem, out.ptr.cast(), Elem::F32, &[1, n, d as i64])? };
        self.embed.run_bound(|b| b.input(&c("input_ids"), &input).and_then(|_| b.output(&c("inputs_embeds"), &output)), |_| Ok(()))?;
        self.count_host_to_device(ids.len() * 8);
        Ok(out)
    }

    fn count_host_to_device(&mut self, bytes: usize) {
        if !self.device.is_host() {
            self.counters.host_to_device_bytes += bytes as f64;
        }
    }

    /// inputs_embeds [B, T, D] for a group: a view of the embed_tokens output when the rows are
    /// consecutive id rows of T positions each, else a zeroed scratch with each row's real
    /// positions right-aligned (left padding, as batch-step.ts lays rows out).
    fn group_embeds(&mut self, g: &[&Planned], t: usize, embedded: &Buffer) -> KvResult<(Option<Buffer>, *mut u8)> {
        let d4 = self.hidden * 4;
        let first = g[0].embedded_at;
        let contiguous = g.iter().enumerate().all(|(k, p)| p.count == t && p.embedded_at.is_some() && p.embedded_at == first.map(|f| f + k * t));
        if contiguous {
            return Ok((None, embedded.at(first.unwrap_or(0) * d4, g.len() * t * d4)?));
        }
        let scratch = self.device.alloc_zeroed(g.len() * t * d4)?;
        let mut copies = Vec::new();
        for (k, p) in g.iter().enumerate() {
            let dst = scratch.at((k * t + t - p.count) * d4, p.count * d4)?;
            match (p.embeds, p.embedded_at) {
                (Some(e), _) => {
                    // SAFETY: `dst` spans the row's count x D floats, which is e.len() * 4 bytes.
                    unsafe { self.device.upload(dst, as_bytes(e))? };
                    self.count_host_to_device(e.len() * 4);
                }
                (None, Some(at)) => copies.push(Copy2d { src: embedded.at(at * d4, p.count * d4)?, src_pitch: 0, dst, dst_pitch: 0, width: p.count * d4, rows: 1 }),
                (None, None) => unreachable!("every row has embeddings or ids"),
            }
        }
        self.device.copy(&copies)?;
        let ptr = scratch.ptr;
        Ok((Some(scratch), ptr))
    }

    fn run_standard(&mut self, g: &[&Planned], embedded: &Buffer, logits: &mut [f32]) -> KvResult<()> {
        let l = self.arena.layout;
        let (b, v) = (g.len(), self.vocab);
        let t = g.iter().map(|p| p.count).max().expect("non-empty group");
        let seqs: Vec<u32> = g.iter().map(|p| p.seq).collect();
        let (bid, first) = self.arena.row_run(&seqs)?;
        let p_len = self.arena.block(bid).cap; // the whole capacity is fed; unused tails masked
        let lengths: Vec<usize> = seqs.iter().map(|&s| self.arena.length(s)).collect::<KvResult<_>>()?;

        // attention_mask [B, P+T], position_ids [B, T] (see batch-step.ts for the layout)
        let mut mask = vec![0i64; b * (p_len + t)];
        let mut positions = vec![0i64; b * t];
        for (k, p) in g.iter().enumerate() {
            let pad = t - p.count;
            mask[k * (p_len + t)..k * (p_len + t) + lengths[k]].fill(1);
            for j in pad..t {
                mask[k * (p_len + t) + p_len + j] = 1;
                positions[k * t + j] = (lengths[k] + j - pad) as i64;
            }
        }
        let (_scratch, embeds_ptr) = self.group_embeds(g, t, embedded)?;
        // presents: per layer and kind [B, Hkv, T, Dh], one scratch buffer for all
        let present_bytes = b * l.heads * t * l.head_dim * l.elem.bytes();
        let presents = self.device.alloc_zeroed(2 * l.layers * present_bytes)?;

        let (bi, ti, pi, hi, di) = (b as i64, t as i64, p_len as i64, l.heads as i64, l.head_dim as i64);
        let dev = &self.device.mem;
        let host = &self.device.host;
        let block = self.arena.block(bid);
        let mut values: Vec<(CString, Value, bool)> = Vec::new(); // (name, value, is_output)
        // SAFETY (every Value::over below): each pointer spans exactly its dims' bytes inside a
        // buffer that lives until after the run: `mask`, `positions`, `logits` (host),
        // `_scratch`/`embedded`, `presents` and the KV block (device), none of which is touched
        // between here and the run.
        unsafe {
            values.push((c("inputs_embeds"), Value::over(dev, embeds_ptr.cast(), Elem::F32, &[bi, ti, self.hidden as i64])?, false));
            values.push((c("attention_mask"), Value::over(host, mask.as_mut_ptr().cast(), Elem::I64, &[bi, pi + ti])?, false));
            values.push((c("position_ids"), Value::over(host, positions.as_mut_ptr().cast(), Elem::I64, &[bi, ti])?, false));
            for i in 0..2 * l.layers {
                let past = block.rows_ptr(&l, i / 2, i % 2, first, b)?;
                values.push((self.names.past[i].clone(), Value::over(dev, past.cast(), l.elem, &[bi, hi, pi, di])?, false));
                let present = presents.at(i * present_bytes, present_bytes)?;
                values.push((self.names.present[i].clone(), Value::over(dev, present.cast(), l.elem, &[bi, hi, ti, di])?, true));
            }
            values.push((c("logits"), Value::over(host, logits.as_mut_ptr().cast(), Elem::F32, &[bi, v as i64])?, true));
        }
        self.graph.run_bound(|bd| bind_all(bd, &values), |_| Ok(()))?;
        self.counters.decoder_runs += 1.0;
        self.count_host_to_device((mask.len() + positions.len()) * 8);
        self.count_device_to_host(b * v * 4);

        let present_ptrs: Vec<*const u8> = (0..2 * l.layers).map(|i| presents.at(i * present_bytes, present_bytes).map(|p| p as *const u8)).collect::<Result<_, _>>()?;
        for (k, p) in g.iter().enumerate() {
            self.arena.append(p.seq, &present_ptrs, k, t, p.count)?;
        }
        Ok(())
    }

    fn count_device_to_host(&mut self, bytes: usize) {
        if !self.device.is_host() {
            self.counters.device_to_host_bytes += bytes as f64;
        }
    }

    fn run_shared(&mut self, g: &[&Planned], embedded: &Buffer, logits: &mut [f32], position_ids: bool) -> KvResult<()> {
        let l = self.arena.layout;
        let (b, v) = (g.len(), self.vocab);
        let t = g[0].count; // groups hold rows of one count (decode: 1; a longer row is alone)
        let seqs: Vec<u32> = g.iter().map(|p| p.seq).collect();
        let (bid, first) = self.arena.row_run(&seqs)?;
        for (&s, p) in seqs.iter().zip(g) {
            let len = self.arena.length(s)?;
            self.arena.ensure_room(s, len + p.count)?;
        }
        // (growing keeps the block's id and rows; only its storage moved)
        let lengths: Vec<usize> = seqs.iter().map(|&s| self.arena.length(s)).collect::<KvResult<_>>()?;
        let cap = self.arena.block(bid).cap;

        // seqlens_k [B] i32: past + T - 1 per row; total_sequence_length: scalar i32
        let mut seqlens: Vec<i32> = lengths.iter().map(|&n| (n + t - 1) as i32).collect();
        let mut total = vec![lengths.iter().map(|&n| n + t).max().expect("non-empty") as i32];
        let mut positions: Vec<i64> = lengths.iter().flat_map(|&n| (n..n + t).map(|x| x as i64)).collect(); // [B, T]
        let (_scratch, embeds_ptr) = self.group_embeds(g, t, embedded)?;
        // The group's logits land in the caller's array directly when its rows are consecutive
        // there, else in a scratch that is scattered afterwards.
        let direct = g.iter().enumerate().all(|(k, p)| p.index == g[0].index + k);
        let mut scratch_logits = if direct { Vec::new() } else { vec![0f32; b * v] };
        let logits_ptr = if direct { logits[g[0].index * v..].as_mut_ptr() } else { scratch_logits.as_mut_ptr() };

        let (bi, ti, ci, hi, di) = (b as i64, t as i64, cap as i64, l.heads as i64, l.head_dim as i64);
        let dev = &self.device.mem;
        let host = &self.device.host;
        let block = self.arena.block(bid);
        let mut values: Vec<(CString, Value, bool)> = Vec::new();
        // SAFETY (every Value::over below): each pointer spans exactly its dims' bytes inside a
        // buffer that outlives the run (host vectors above, the caller's logits, the embeddings
        // and the KV block); past and present are deliberately the same memory: the op writes
        // each row's new positions in place at its seqlens_k (past_present_share_buffer).
        unsafe {
            values.push((c("inputs_embeds"), Value::over(dev, embeds_ptr.cast(), Elem::F32, &[bi, ti, self.hidden as i64])?, false));
            values.push((c("seqlens_k"), Value::over(host, seqlens.as_mut_ptr().cast(), Elem::I32, &[bi])?, false));
            values.push((c("total_sequence_length"), Value::over(host, total.as_mut_ptr().cast(), Elem::I32, &[])?, false));
            if position_ids {
                values.push((c("position_ids"), Value::over(host, positions.as_mut_ptr().cast(), Elem::I64, &[bi, ti])?, false));
            }
            for i in 0..2 * l.layers {
                let kv = block.rows_ptr(&l, i / 2, i % 2, first, b)?;
                values.push((self.names.past[i].clone(), Value::over(dev, kv.cast(), l.elem, &[bi, hi, ci, di])?, false));
                values.push((self.names.present[i].clone(), Value::over(dev, kv.cast(), l.elem, &[bi, hi, ci, di])?, true));
            }
            values.push((c("logits"), Value::over(host, logits_ptr.cast(), Elem::F32, &[bi, v as i64])?, true));
        }
        self.graph.run_bound(|bd| bind_all(bd, &values), |_| Ok(()))?;
        self.counters.decoder_runs += 1.0;
        self.count_host_to_device(seqlens.len() * 4 + 4 + if position_ids { positions.len() * 8 } else { 0 });
        self.count_device_to_host(b * v * 4);
        if !direct {
            for (k, p) in g.iter().enumerate() {
                logits[p.index * v..(p.index + 1) * v].copy_from_slice(&scratch_logits[k * v..(k + 1) * v]);
            }
        }
        for (&s, p) in seqs.iter().zip(g) {
            self.arena.advance(s, p.count)?;
        }
        Ok(())
    }
}

fn bind_all(b: &mut ffi::Binding, values: &[(CString, Value, bool)]) -> Result<(), String> {
    for (name, value, output) in values {
        if *output {
            b.output(name, value)?;
        } else {
            b.input(name, value)?;
        }
    }
    Ok(())
}

impl From<KvError> for String {
    fn from(e: KvError) -> String {
        match e {
            KvError::Full(m) | KvError::Other(m) => m,
        }
    }
}
