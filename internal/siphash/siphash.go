// Package siphash is SipHash-2-4 with a 128-bit output (Aumasson and
// Bernstein, "SipHash: a fast short-input PRF", 2012, and the reference
// implementation's 128-bit mode), the MAC that signs receipts.
//
// Hash is streaming and allocation-free: it lives on the caller's stack and
// buffers 64 bytes before it compresses, so that a caller writing many small
// fields (varints, short strings) pays for the compression once per 8 bytes,
// not per call.
package siphash

import (
	"encoding/binary"
	"math/bits"
)

// Hash computes SipHash-2-4-128 of what is written to it. Make one with New;
// the zero Hash is not keyed.
type Hash struct {
	v0, v1, v2, v3 uint64
	n              uint64 // bytes compressed so far
	k              int    // bytes buffered in buf
	buf            [64]byte
}

// New returns a Hash keyed with the 128-bit key k0 || k1, each half read as a
// little-endian uint64 from the key's bytes (as the reference does).
func New(k0, k1 uint64) Hash {
	return Hash{
		v0: k0 ^ 0x736f6d6570736575,
		v1: k1 ^ 0x646f72616e646f6d ^ 0xee, // 0xee: the 128-bit output mode
		v2: k0 ^ 0x6c7967656e657261,
		v3: k1 ^ 0x7465646279746573,
	}
}

// Key splits a 16-byte key into the halves New takes.
func Key(k [16]byte) (k0, k1 uint64) {
	return binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])
}

// blocks compresses the whole 8-byte blocks of p into h's state.
func (h *Hash) blocks(p []byte) {
	h.v0, h.v1, h.v2, h.v3 = compress(h.v0, h.v1, h.v2, h.v3, p)
}

// compress returns the state v after the whole 8-byte blocks of p.
func compress(v0, v1, v2, v3 uint64, p []byte) (uint64, uint64, uint64, uint64) {
	for len(p) >= 8 {
		m := binary.LittleEndian.Uint64(p)
		v3 ^= m
		v0, v1, v2, v3 = round(v0, v1, v2, v3)
		v0, v1, v2, v3 = round(v0, v1, v2, v3)
		v0 ^= m
		p = p[8:]
	}
	return v0, v1, v2, v3
}

func round(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// flush compresses the buffer, which is full.
func (h *Hash) flush() {
	h.blocks(h.buf[:])
	h.n += uint64(len(h.buf))
	h.k = 0
}

// AddBytes adds p to the hashed message.
func (h *Hash) AddBytes(p []byte) {
	if h.k > 0 {
		c := copy(h.buf[h.k:], p)
		h.k += c
		p = p[c:]
		if h.k < len(h.buf) {
			return
		}
		h.flush()
	}
	if len(p) >= len(h.buf) {
		w := len(p) &^ 7
		h.blocks(p[:w])
		h.n += uint64(w)
		p = p[w:]
	}
	h.k = copy(h.buf[:], p)
}

// AddString adds s to the hashed message.
func (h *Hash) AddString(s string) {
	for len(s) > 0 {
		c := copy(h.buf[h.k:], s)
		h.k += c
		s = s[c:]
		if h.k == len(h.buf) {
			h.flush()
		}
	}
}

// AddByte adds c to the hashed message.
func (h *Hash) AddByte(c byte) {
	h.buf[h.k] = c
	h.k++
	if h.k == len(h.buf) {
		h.flush()
	}
}

// AddUvarint adds x to the hashed message as binary.AppendUvarint encodes
// it.
func (h *Hash) AddUvarint(x uint64) {
	for x >= 0x80 {
		h.AddByte(byte(x) | 0x80)
		x >>= 7
	}
	h.AddByte(byte(x))
}

// Sum128 returns the 128-bit SipHash of the message written so far, as the
// two little-endian halves of the reference's 16-byte output. It does not
// change h.
func (h *Hash) Sum128() (lo, hi uint64) {
	whole := h.k &^ 7
	v0, v1, v2, v3 := compress(h.v0, h.v1, h.v2, h.v3, h.buf[:whole])
	return finish(v0, v1, v2, v3, h.buf[whole:h.k], h.n+uint64(h.k))
}

// finish compresses the last block, the tail (fewer than 8 bytes) and the
// message's length, and finalizes.
func finish(v0, v1, v2, v3 uint64, tail []byte, length uint64) (lo, hi uint64) {
	m := length << 56
	for i := len(tail) - 1; i >= 0; i-- {
		m |= uint64(tail[i]) << (8 * i)
	}
	v3 ^= m
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0 ^= m
	v2 ^= 0xee
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	lo = v0 ^ v1 ^ v2 ^ v3
	v1 ^= 0xdd
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	v0, v1, v2, v3 = round(v0, v1, v2, v3)
	hi = v0 ^ v1 ^ v2 ^ v3
	return lo, hi
}

// Sum128 returns the 128-bit SipHash of p under the key k0 || k1, straight
// from p: the fastest way when the whole message is at hand.
func Sum128(k0, k1 uint64, p []byte) (lo, hi uint64) {
	v0, v1, v2, v3 := compress(k0^0x736f6d6570736575, k1^0x646f72616e646f6d^0xee, k0^0x6c7967656e657261, k1^0x7465646279746573, p[:len(p)&^7])
	return finish(v0, v1, v2, v3, p[len(p)&^7:], uint64(len(p)))
}
