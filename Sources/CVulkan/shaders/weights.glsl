// Reading a weight element in its storage type, widened to f32 exactly (the same values the CPU's
// convert.c gives): the buffer is bound as uints, so 8- and 16-bit elements are picked out of words.
//   dtype 0 f32, 1 bf16, 2 f16, 3 float8_e4m3fn, 4 float8_e5m2
float widen(uint dtype, uint i) {
    if (dtype == 0u) return uintBitsToFloat(w[i]);
    if (dtype <= 2u) {
        uint word = w[i >> 1];
        uint bits = (i & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
        return dtype == 1u ? uintBitsToFloat(bits << 16) : unpackHalf2x16(bits).x;
    }
    uint b = (w[i >> 2] >> (8u * (i & 3u))) & 0xFFu;
    // e5m2 is the top byte of an f16.
    if (dtype == 4u) return unpackHalf2x16(b << 8).x;
    // e4m3fn: bias 7, no infinities, S.1111.111 is NaN; subnormals are m · 2^-9.
    float s = (b & 0x80u) != 0u ? -1.0 : 1.0;
    uint e = (b >> 3) & 0xFu, m = b & 7u;
    if (e == 15u && m == 7u) return uintBitsToFloat(0x7FC00000u);
    if (e == 0u) return s * ldexp(float(m), -9);
    return s * ldexp(float(8u + m), int(e) - 10);
}
