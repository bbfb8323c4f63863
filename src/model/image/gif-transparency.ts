// PIL opens a GIF's first frame as a palette image and `convert('RGB')` shows its transparent
// pixels in the palette colour of the transparent index. libvips instead returns those pixels
// with alpha 0 and colour 0. To match PIL, read that palette colour from the file itself: the
// first image's Graphic Control Extension (transparent index) and the colour table it uses
// (its local table, else the global one).

const GIF_SIGNATURE = /^GIF8[79]a$/;

/** The RGB colour of the first frame's transparent index, or null (none, or unreadable). */
export function gifTransparentColour(gif: Uint8Array): [number, number, number] | null {
  if (gif.length < 13 || !GIF_SIGNATURE.test(String.fromCharCode(...gif.subarray(0, 6)))) return null;
  const tableBytes = (packed: number): number => (packed & 0x80 ? 3 << ((packed & 7) + 1) : 0);

  let p = 13; // after the logical screen descriptor
  const globalTable = { at: p, bytes: tableBytes(gif[10]) };
  p += globalTable.bytes;
  let transparentIndex: number | null = null;

  while (p < gif.length) {
    const block = gif[p];
    if (block === 0x21) {
      // Extension: label, then sub-blocks (size byte + data) up to a zero size.
      const label = gif[p + 1];
      p += 2;
      if (label === 0xf9 && gif[p] === 4 && p + 4 < gif.length) {
        transparentIndex = gif[p + 1] & 1 ? gif[p + 4] : null;
      }
      while (p < gif.length && gif[p] !== 0) p += gif[p] + 1;
      p += 1;
    } else if (block === 0x2c) {
      // First image descriptor: 10 bytes, its packed field says whether a local table follows.
      if (transparentIndex === null || p + 9 >= gif.length) return null;
      const local = tableBytes(gif[p + 9]);
      const table = local ? { at: p + 10, bytes: local } : globalTable;
      const at = table.at + transparentIndex * 3;
      if (transparentIndex * 3 + 3 > table.bytes || at + 3 > gif.length) return null;
      return [gif[at], gif[at + 1], gif[at + 2]];
    } else {
      return null; // trailer or garbage before any image
    }
  }
  return null;
}
