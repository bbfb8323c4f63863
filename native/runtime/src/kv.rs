//! The KV cache in native (or device) memory, laid out as JsKvCache lays it out in JS memory
//! (src/runtime/kv-cache.ts): sequences live in blocks, one row each, and a block stores per
//! layer keys then values, each [rows, Hkv, capacity, Dh], which is exactly the decoder's past
//! input. A run of consecutive rows is therefore a ready past feed, with no copy; sequences that
//! are asked for together but are not such a run move into a fresh block once.
//!
//! Capacity is a byte budget enforced by reservation (prompt + max new tokens at allocation);
//! blocks stored for the prefix cache (save/load/drop) count against the same budget.

use std::collections::HashMap;
use std::rc::Rc;

use crate::device::{Buffer, Copy2d, Device};
use crate::ffi::Elem;

/// Storage grows in blocks of this many positions (as JsKvCache's GROWTH_BLOCK).
const GROWTH_BLOCK: usize = 64;

pub enum KvError {
    /// The byte budget cannot hold the request (the engine answers 429/503, not 500).
    Full(String),
    Other(String),
}

impl From<String> for KvError {
    fn from(s: String) -> Self {
        KvError::Other(s)
    }
}

pub type KvResult<T> = std::result::Result<T, KvError>;

#[derive(Clone, Copy)]
pub struct KvLayout {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub elem: Elem,
}

impl KvLayout {
    pub fn bytes_per_position(&self) -> usize {
        2 * self.layers * self.heads * self.head_dim * self.elem.bytes()
    }
    /// Bytes of `n` positions of one head.
    fn run(&self, n: usize) -> usize {
        n * self.head_dim * self.elem.bytes()
    }
}

/// Storage shared by one or more sequences: one buffer of [layers][key, value][rows, Hkv, cap, Dh].
pub struct Block {
    pub rows: usize,
    pub cap: usize,
    buf: Buffer,
    members: Vec<Option<u32>>,
}

impl Block {
    /// Bytes of one layer's keys (or values).
    fn plane(&self, l: &KvLayout) -> usize {
        self.rows * l.heads * l.run(self.cap)
    }
    /// Byte offset of position `pos` of head `head` of row `row` in layer `layer`'s keys (kind 0) or values (1).
    fn offset(&self, l: &KvLayout, layer: usize, kind: usize, row: usize, head: usize, pos: usize) -> usize {
        (layer * 2 + kind) * self.plane(l) + (row * l.heads + head) * l.run(self.cap) + l.run(pos)
    }
    /// Rows [first, first+count) of one layer's keys or values: a [count, Hkv, cap, Dh] tensor.
    pub fn rows_ptr(&self, l: &KvLayout, layer: usize, kind: usize, first: usize, count: usize) -> Result<*mut u8, String> {
        self.buf.at(self.offset(l, layer, kind, first, 0, 0), count * l.heads * l.run(self.cap))
    }
}

/// Bytes a strided copy of `rows` runs of `width` bytes, `pitch` apart, spans.
fn span(rows: usize, pitch: usize, width: usize) -> usize {
    if rows == 0 { 0 } else { (rows - 1) * pitch + width }
}

struct Seq {
    length: usize,
    reserved: usize,
    block: u64,
    row: usize,
}

/// A block of positions kept outside any sequence: [layers][key, value][Hkv, count, Dh].
struct Stored {
    count: usize,
    buf: Buffer,
}

/// The cache's byte counts (JS: KvCacheUsage, plus the blocks stored outside any sequence).
#[napi_derive::napi(object)]
pub struct Usage {
    pub used_bytes: f64,
    /// Bytes promised to allocated sequences (>= used_bytes).
    pub reserved_bytes: f64,
    pub capacity_bytes: f64,
    pub sequences: u32,
    /// Blocks kept outside any sequence (save_block), counted in the same budget.
    pub stored_bytes: f64,
    pub stored_blocks: u32,
}

pub struct KvArena {
    pub layout: KvLayout,
    device: Rc<Device>,
    capacity_bytes: usize,
    reserved_positions: usize,
    stored_positions: usize,
    seqs: HashMap<u32, Seq>,
    blocks: HashMap<u64, Block>,
    next_block: u64,
    stored: HashMap<u32, Stored>,
    next_handle: u32,
}

impl KvArena {
    pub fn new(layout: KvLayout, capacity_bytes: usize, device: Rc<Device>) -> KvArena {
        KvArena {
            layout,
            device,
            capacity_bytes,
            reserved_positions: 0,
            stored_positions: 0,
            seqs: HashMap::new(),
            blocks: HashMap::new(),
            next_block: 1,
            stored: HashMap::new(),
            next_handle: 1,
        }
    }

    pub fn bytes_per_position(&self) -> usize {
        self.layout.bytes_per_position()
    }

    pub fn allocate(&mut self, id: u32, max_positions: usize) -> KvResult<()> {
        if self.seqs.contains_key(&id) {
            return Err(format!("KV cache: sequence {id} is already allocated").into());
        }
        self.reserve(max_positions, id)?;
        let block = self.new_block(1, 0)?;
        let bid = self.insert_block(block);
        self.blocks.get_mut(&bid).expect("just inserted").members[0] = Some(id);
        self.seqs.insert(id, Seq { length: 0, reserved: max_positions, block: bid, row: 0 });
        Ok(())
    }

    pub fn has(&self, id: u32) -> bool {
        self.seqs.contains_key(&id)
    }

    pub fn length(&self, id: u32) -> KvResult<usize> {
        Ok(self.seq(id)?.length)
    }

    pub fn free(&mut self, id: u32) {
        let Some(seq) = self.seqs.remove(&id) else { return };
        self.reserved_positions -= seq.reserved;
        self.leave_block(seq.block, seq.row);
    }

    pub fn usage(&self) -> Usage {
        let bpp = self.bytes_per_position() as f64;
        let used: usize = self.seqs.values().map(|s| s.length).sum();
        Usage {
            used_bytes: used as f64 * bpp,
            reserved_bytes: self.reserved_positions as f64 * bpp,
            capacity_bytes: self.capacity_bytes as f64,
            sequences: self.seqs.len() as u32,
            stored_bytes: self.stored_positions as f64 * bpp,
            stored_blocks: self.stored.len() as u32,
        }
    }

    /// The block and first row of `ids`, after moving them into consecutive rows of a fresh
    /// block when they are not already.
    pub fn row_run(&mut self, ids: &[u32]) -> KvResult<(u64, usize)> {
        if ids.is_empty() {
            return Err("KV cache: gather of no sequences".to_string().into());
        }
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(format!("KV cache: a sequence appears twice in {ids:?}").into());
            }
            self.seq(*id)?;
        }
        let first = self.seq(ids[0])?;
        let (bid, row0) = (first.block, first.row);
        let is_run = ids.iter().enumerate().all(|(i, id)| {
            let s = &self.seqs[id];
            s.block == bid && s.row == row0 + i
        });
        if is_run {
            return Ok((bid, row0));
        }
        self.move_to_new_block(ids)?;
        Ok((self.seqs[&ids[0]].block, 0))
    }

    pub fn block(&self, bid: u64) -> &Block {
        &self.blocks[&bid]
    }

    /// Makes room for `id` to reach `needed` positions: its reservation (grown if the budget
    /// allows, as JsKvCache does) and its block's capacity.
    pub fn ensure_room(&mut self, id: u32, needed: usize) -> KvResult<()> {
        let reserved = self.seq(id)?.reserved;
        if needed > reserved {
            self.reserve(needed - reserved, id)?;
            self.seqs.get_mut(&id).expect("checked").reserved = needed;
        }
        let bid = self.seqs[&id].block;
        if needed > self.blocks[&bid].cap {
            self.grow(bid, needed)?;
        }
        Ok(())
    }

    /// Appends row `b` of a step's presents (per layer and kind a [B, Hkv, T, Dh] tensor on this
    /// device, `presents[layer * 2 + kind]`): its last `count` positions (rows are left-padded).
    pub fn append(&mut self, id: u32, presents: &[*const u8], b: usize, t: usize, count: usize) -> KvResult<()> {
        if count > t {
            return Err(format!("KV cache: count {count} > {t} new positions").into());
        }
        let length = self.seq(id)?.length;
        self.ensure_room(id, length + count)?;
        let l = self.layout;
        let s = &self.seqs[&id];
        let block = &self.blocks[&s.block];
        let mut ops = Vec::with_capacity(2 * l.layers);
        for layer in 0..l.layers {
            for kind in 0..2 {
                // present[b, h, t-count.., :] -> block[row, h, length.., :], for every head h
                let src = presents[layer * 2 + kind];
                // SAFETY (offset): `b < B` and `t - count + count <= t` keep it inside the
                // [B, Hkv, T, Dh] present the caller passes.
                let src = unsafe { src.add((b * l.heads) * l.run(t) + l.run(t - count)) };
                let dst = block.buf.at(block.offset(&l, layer, kind, s.row, 0, length), span(l.heads, l.run(block.cap), l.run(count)))?;
                ops.push(Copy2d { src, src_pitch: l.run(t), dst, dst_pitch: l.run(block.cap), width: l.run(count), rows: l.heads });
            }
        }
        self.device.copy(&ops)?;
        self.seqs.get_mut(&id).expect("checked").length += count;
        Ok(())
    }

    /// Counts `count` positions the decoder wrote in place (shared past/present buffer).
    pub fn advance(&mut self, id: u32, count: usize) -> KvResult<()> {
        let s = self.seqs.get_mut(&id).ok_or_else(|| KvError::Other(format!("KV cache: unknown sequence {id}")))?;
        if s.length + count > self.blocks[&s.block].cap {
            return Err(format!("internal: sequence {id} advanced past its block's capacity").into());
        }
        s.length += count;
        Ok(())
    }

    /// Copies positions [start, start+count) of `id` out of the sequence; returns a handle.
    /// The block counts in the budget; the source's own reservation covers it until the source
    /// is freed (blocks are saved from a sequence about to be freed), so only the other
    /// reservations and the stored blocks can refuse it.
    pub fn save_block(&mut self, id: u32, start: usize, count: usize) -> KvResult<u32> {
        let s = self.seq(id)?;
        if count == 0 || start + count > s.length {
            return Err(format!("KV cache: cannot save positions [{start}, {}) of sequence {id}, which has {}", start + count, s.length).into());
        }
        let bpp = self.bytes_per_position();
        let in_use = (self.reserved_positions - s.reserved + self.stored_positions) * bpp;
        if in_use + count * bpp > self.capacity_bytes {
            return Err(KvError::Full(format!(
                "KV cache full: a stored block of {} bytes does not fit beside {in_use} of {} in use",
                count * bpp,
                self.capacity_bytes
            )));
        }
        let l = self.layout;
        let buf = self.device.alloc_zeroed(2 * l.layers * l.heads * l.run(count))?;
        let block = &self.blocks[&s.block];
        let mut ops = Vec::with_capacity(2 * l.layers);
        for layer in 0..l.layers {
            for kind in 0..2 {
                let src = block.buf.at(block.offset(&l, layer, kind, s.row, 0, start), span(l.heads, l.run(block.cap), l.run(count)))?;
                let dst = buf.at((layer * 2 + kind) * l.heads * l.run(count), l.heads * l.run(count))?;
                ops.push(Copy2d { src, src_pitch: l.run(block.cap), dst, dst_pitch: l.run(count), width: l.run(count), rows: l.heads });
            }
        }
        self.device.copy(&ops)?;
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.stored_positions += count;
        self.stored.insert(handle, Stored { count, buf });
        Ok(handle)
    }

    /// Appends a stored block at the sequence's current length, within its reservation.
    pub fn load_block(&mut self, id: u32, handle: u32) -> KvResult<()> {
        let count = self.stored.get(&handle).ok_or_else(|| KvError::Other(format!("KV cache: unknown stored block {handle}")))?.count;
        let s = self.seq(id)?;
        let length = s.length;
        let reserved = s.reserved;
        if length + count > reserved {
            return Err(format!("KV cache: a block of {count} positions does not fit sequence {id}'s reservation ({length} of {reserved} used)").into());
        }
        // Blocks are loaded one after another at allocation: grow geometrically, not 64 at a time.
        let (bid, cap) = (s.block, self.blocks[&s.block].cap);
        if length + count > cap {
            self.grow(bid, (length + count).max((2 * cap).min(reserved)))?;
        }
        let l = self.layout;
        let s = &self.seqs[&id];
        let block = &self.blocks[&s.block];
        let stored = &self.stored[&handle];
        let mut ops = Vec::with_capacity(2 * l.layers);
        for layer in 0..l.layers {
            for kind in 0..2 {
                let src = stored.buf.at((layer * 2 + kind) * l.heads * l.run(count), l.heads * l.run(count))?;
                let dst = block.buf.at(block.offset(&l, layer, kind, s.row, 0, length), span(l.heads, l.run(block.cap), l.run(count)))?;
                ops.push(Copy2d { src, src_pitch: l.run(count), dst, dst_pitch: l.run(block.cap), width: l.run(count), rows: l.heads });
            }
        }
        self.device.copy(&ops)?;
        self.seqs.get_mut(&id).expect("checked").length += count;
        Ok(())
    }

    pub fn drop_block(&mut self, handle: u32) -> KvResult<()> {
        let s = self.stored.remove(&handle).ok_or_else(|| KvError::Other(format!("KV cache: unknown stored block {handle}")))?;
        self.stored_positions -= s.count;
        Ok(())
    }

    fn seq(&self, id: u32) -> KvResult<&Seq> {
        self.seqs.get(&id).ok_or_else(|| KvError::Other(format!("KV cache: unknown sequence {id}")))
    }

    fn reserve(&mut self, positions: usize, id: u32) -> KvResult<()> {
        let bpp = self.bytes_per_position();
        let taken = (self.reserved_positions + self.stored_positions) * bpp;
        if taken + positions * bpp > self.capacity_bytes {
            return Err(KvError::Full(format!(
                "KV cache full: sequence {id} needs {} bytes, {} of {} are free",
                positions * bpp,
                self.capacity_bytes.saturating_sub(taken),
                self.capacity_bytes
            )));
        }
        self.reserved_positions += positions;
        Ok(())
    }

    fn new_block(&self, rows: usize, cap: usize) -> KvResult<Block> {
        let l = &self.layout;
        let buf = self.device.alloc_zeroed(2 * l.layers * rows * l.heads * l.run(cap))?;
        Ok(Block { rows, cap, buf, members: vec![None; rows] })
    }

    fn insert_block(&mut self, block: Block) -> u64 {
        let bid = self.next_block;
        self.next_block += 1;
        self.blocks.insert(bid, block);
        bid
    }

    fn leave_block(&mut self, bid: u64, row: usize) {
        let block = self.blocks.get_mut(&bid).expect("a sequence's block exists");
        block.members[row] = None;
        if block.members.iter().all(Option::is_none) {
            self.blocks.remove(&bid); // the block goes with its last member
        }
    }

    /// Positions per row for a block that must hold `needed`: the next whole GROWTH_BLOCK, but
    /// no more than the largest reservation among its members.
    fn capacity_for(&self, needed: usize, members: &[u32]) -> usize {
        if needed == 0 {
            return 0;
        }
        let most = members.iter().map(|id| self.seqs[id].reserved).max().unwrap_or(needed);
        needed.max((needed.div_ceil(GROWTH_BLOCK) * GROWTH_BLOCK).min(most))
    }

    /// Copy ops for `id`'s cached positions into row `row` of `to`.
    fn row_copies(&self, id: u32, to: &Block, row: usize) -> Result<Vec<Copy2d>, String> {
        let l = self.layout;
        let s = &self.seqs[&id];
        let from = &self.blocks[&s.block];
        let mut ops = Vec::with_capacity(2 * l.layers);
        if s.length == 0 {
            return Ok(ops);
        }
        for layer in 0..l.layers {
            for kind in 0..2 {
                let src = from.buf.at(from.offset(&l, layer, kind, s.row, 0, 0), span(l.heads, l.run(from.cap), l.run(s.length)))?;
                let dst = to.buf.at(to.offset(&l, layer, kind, row, 0, 0), span(l.heads, l.run(to.cap), l.run(s.length)))?;
                ops.push(Copy2d { src, src_pitch: l.run(from.cap), dst, dst_pitch: l.run(to.cap), width: l.run(s.length), rows: l.heads });
            }
        }
        Ok(ops)
    }

    /// Moves the sequences, in this order, into consecutive rows of a fresh block.
    fn move_to_new_block(&mut self, ids: &[u32]) -> KvResult<()> {
        let longest = ids.iter().map(|id| self.seqs[id].length).max().unwrap_or(0);
        // Room for the next token, so that the decode step after the move does not regrow at once.
        let cap = if longest == 0 { 0 } else { self.capacity_for(longest + 1, ids) };
        let mut block = self.new_block(ids.len(), cap)?;
        let mut ops = Vec::new();
        for (row, id) in ids.iter().enumerate() {
            ops.extend(self.row_copies(*id, &block, row)?);
        }
        self.device.copy(&ops)?;
        for (row, id) in ids.iter().enumerate() {
            block.members[row] = Some(*id);
        }
        let bid = self.insert_block(block);
        for (row, id) in ids.iter().enumerate() {
            let s = self.seqs.get_mut(id).expect("checked");
            let (old, old_row) = (s.block, s.row);
            s.block = bid;
            s.row = row;
            self.leave_block(old, old_row);
        }
        Ok(())
    }

    /// Reallocates a block with room for `needed` positions per row, keeping its live rows.
    fn grow(&mut self, bid: u64, needed: usize) -> KvResult<()> {
        let (rows, live): (usize, Vec<(u32, usize)>) = {
            let b = &self.blocks[&bid];
            (b.rows, b.members.iter().enumerate().filter_map(|(r, m)| m.map(|id| (id, r))).collect())
        };
        let ids: Vec<u32> = live.iter().map(|(id, _)| *id).collect();
        let bigger = self.new_block(rows, self.capacity_for(needed, &ids))?;
        let mut ops = Vec::new();
        for (id, row) in &live {
            ops.extend(self.row_copies(*id, &bigger, *row)?);
        }
        self.device.copy(&ops)?;
        let block = self.blocks.get_mut(&bid).expect("exists");
        block.cap = bigger.cap;
        block.buf = bigger.buf; // the old storage is freed here, after the copies
        Ok(())
    }
}
