// The LSTM kernels, written once against a Vec type (vec_*.h) and instantiated per ISA by
// kernels_<isa>.cc inside its own namespace, so code built for one ISA is never linked into
// another's path. Include only from those translation units; it includes nothing itself.
//
// A panel is kPanelWidth<T> hidden units = kVecsPerPanel registers.
//
// Weights stored as W other than T (bf16, int8) are widened to T as they are loaded (V::widen, a
// k step at a time, see kernels.h) and the arithmetic is T's: a bf16 kernel computes exactly what the
// T kernel computes on the bf16 values. int8 sums each group of kGroup k on its own, then adds it
// times the group's scales, in the same order in every kernel, so that the bitwise independence of
// the batch and the thread count carries over.
//
// Where the ISA has a dot-product instruction for the stored type (V::DotWeights: VNNI's vpdpbusd
// for int8), each row of activations is first quantized to 16 bits and split in two bytes
// (split_row): two vpdpbusd per 4 k and vector of units, summed exactly in int32 per group, then
// converted and scaled as above. The GEMM and the fused step split a row the same way and add in
// the same order: they still agree bitwise.

template <class V, typename W = typename V::T>
struct Kernels {
  using T = typename V::T;
  using Reg = typename V::Reg;
  static constexpr int64_t kPanel = kPanelWidth<T>;
  static constexpr int kVecsPerPanel = static_cast<int>(kPanel) / V::kWidth;
  // AVX2 (float32 and float64): a panel is two vectors, and the sixteen registers hold the fused
  // step's sums of two rows only one vector at a time (multiply_add_rows). The row-count choices
  // below that depend on it were measured on Zen 3; the scalar kernels keep the others'.
  static constexpr bool kTwoVectorPanels = kVecsPerPanel == 2;
  static constexpr bool kScaled = WeightFormat<W>::kScaled;
  static constexpr int64_t kGroup = WeightFormat<W>::kGroup;
  static constexpr int kStep = static_cast<int>(WeightFormat<W>::kKStep);  // k per 32-bit word of a unit
  static constexpr bool kDot = std::is_same_v<W, typename V::DotWeights>;
  // Stored weights the GEMM widens once per block for all its row tiles (widen_block).
  static constexpr bool kWidens = !std::is_same_v<W, T> && !kDot;

  // The k step of weights stored as WP: kStep for W, 1 for weights already widened to T.
  template <typename WP>
  static constexpr int kStepOf = std::is_same_v<WP, W> ? kStep : 1;

  // One vector of units' weights for S consecutive k (from a run's word for those k), widened.
  template <typename WP, int S>
  static void load_weights(const WP* p, Reg (&w)[S]) {
    if constexpr (S == 1) {
      w[0] = V::load(p);
    } else {
      V::widen(p, w);
    }
  }
  // GEMM row tile: about 12 accumulators leaves registers for the weights and broadcasts (the
  // dot-product kernels need three per row: the two parts' int32 sums and the float one).
  static constexpr int kRowTile = kDot ? 8 : kVecsPerPanel >= 12 ? 1 : 12 / kVecsPerPanel;
  // Below this many rows, row tiles would have too few FMA chains (rows x vectors per panel); go row
  // by row, all gates at once. A 3-row tile has 6 chains with AVX2's two vectors per panel.
  static constexpr int64_t kMinTiledRows = kTwoVectorPanels ? 3 : 4;

  // acc[r] += sum over n k of a[k][r] * w_k, for `R` rows of a packed A tile (k-major, R values
  // per k, from ak) and one panel of one gate (one run of kPanel weights per k, from wk; stored
  // weights W, or weights widened to T by widen_block). Meanwhile it prefetches `prefetch_lines`
  // cache lines from `prefetch` into L2, one per k step, so they arrive spread over the tile's
  // FMAs. Every accumulator takes its k in order, whatever the k step.
  template <int R, typename WP>
  static void multiply_add_tile(int64_t n, const WP* wk, const T* ak, const char*& prefetch, int64_t& prefetch_lines,
                                Reg (&acc)[R][kVecsPerPanel]) {
    constexpr int S = kStepOf<WP>;
    int64_t k = 0;
#pragma GCC unroll 4
    for (; k + S <= n; k += S, wk += kPanel * S, ak += R * S) {
      if (prefetch_lines > 0) {
        __builtin_prefetch(prefetch, 0, 2);
        prefetch += 64;
        --prefetch_lines;
      }
      tile_step<R>(S, wk, ak, acc);
    }
    if (k < n) tile_step<R>(static_cast<int>(n - k), wk, ak, acc);  // the stored padding past n is not read as k
  }

  // The first `steps` (<= the k step) k of one k step of multiply_add_tile.
  template <int R, typename WP>
  static void tile_step(int steps, const WP* wk, const T* ak, Reg (&acc)[R][kVecsPerPanel]) {
    constexpr int S = kStepOf<WP>;
    Reg wv[kVecsPerPanel][S];
    for (int v = 0; v < kVecsPerPanel; ++v) load_weights(wk + v * V::kWidth * S, wv[v]);
    for (int s = 0; s < steps; ++s)
      for (int r = 0; r < R; ++r) {
        Reg b = V::set1(ak[s * R + r]);
        for (int v = 0; v < kVecsPerPanel; ++v) acc[r][v] = V::fmadd(wv[v][s], b, acc[r][v]);
      }
  }

  // c[r][c_offset ..] += sum over k in [k0, k1) of a[k][r] * w_k, for `R` rows of one packed A
  // tile (k-major, R values per k) and one panel of one gate, whose weights for k0 start at w_k0
  // and, for int8, whose scales for k0's group start at `scales`, the next group's `scale_stride`
  // further. The weights are stored ones (W) or a block widen_block widened (T).
  template <int R, typename WP>
  static void gemm_tile(const T* a, int64_t k0, int64_t k1, const WP* w_k0, const T* scales, int64_t scale_stride,
                        T* const* c, int64_t c_offset, const char* prefetch = nullptr, int64_t prefetch_lines = 0) {
    Reg acc[R][kVecsPerPanel];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kVecsPerPanel; ++v) acc[r][v] = V::zero();
    if constexpr (!kScaled) {
      multiply_add_tile<R>(k1 - k0, w_k0, a + k0 * R, prefetch, prefetch_lines, acc);
    } else {
      for (int64_t g0 = k0; g0 < k1; g0 += kGroup, scales += scale_stride) {
        const int64_t n = k1 - g0 < kGroup ? k1 - g0 : kGroup;
        Reg group[R][kVecsPerPanel];
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < kVecsPerPanel; ++v) group[r][v] = V::zero();
        multiply_add_tile<R>(n, w_k0 + (g0 - k0) * kPanel, a + g0 * R, prefetch, prefetch_lines, group);
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < kVecsPerPanel; ++v)
            acc[r][v] = V::fmadd(group[r][v], V::load(scales + v * V::kWidth), acc[r][v]);
      }
    }
    for (int r = 0; r < R; ++r) {
      T* out = c[r] + c_offset;
      for (int v = 0; v < kVecsPerPanel; ++v) {
        T* slot = out + v * V::kWidth;
        V::store(slot, V::add(V::load(slot), acc[r][v]));
      }
    }
  }

  // Rows go in tiles of near-equal height (32 rows: 6,6,5,5,5,5 rather than five of 6 and a 2-row
  // tile with too few FMA chains to hide their latency). Tile i starts at row tile_start(i).
  static int64_t row_tiles(int64_t rows) { return (rows + kRowTile - 1) / kRowTile; }
  static int64_t tile_start(int64_t rows, int64_t tiles, int64_t i) { return rows * i / tiles; }

  // Copies A into row tiles, each k-major: the micro-kernel then broadcasts from one pointer
  // instead of juggling a register per row (twelve row pointers would not fit in x86's GPRs).
  static void pack_rows(const GemmArgs<T, W>& args) {
    const int64_t tiles = row_tiles(args.rows);
    if constexpr (kDot) {
      // Per tile, its rows' high words then low words, k step after k step (height words per
      // step), beside every row's scale: 2 * rows * dot_steps + rows values of a_pack.
      const int64_t kq = dot_steps(args.k);
      uint32_t* words = reinterpret_cast<uint32_t*>(args.a_pack);
      T* row_scales = args.a_pack + 2 * args.rows * kq;
      for (int64_t i = 0; i < tiles; ++i) {
        const int64_t r0 = tile_start(args.rows, tiles, i), height = tile_start(args.rows, tiles, i + 1) - r0;
        uint32_t* hi = words + 2 * r0 * kq;
        for (int64_t r = 0; r < height; ++r)
          row_scales[r0 + r] = split_row(args.a[r0 + r], args.k, hi + r, hi + height * kq + r, height);
      }
      return;
    }
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t r0 = tile_start(args.rows, tiles, i), height = tile_start(args.rows, tiles, i + 1) - r0;
      T* tile = args.a_pack + r0 * args.k;
      for (int64_t r = 0; r < height; ++r) {
        const T* row = args.a[r0 + r];
        for (int64_t k = 0; k < args.k; ++k) tile[k * height + r] = row[k];
      }
    }
  }

  // One tile of `height` rows, with the micro-kernel built for exactly that height.
  template <int R = kRowTile, typename WP>
  static void gemm_any_tile(int64_t height, const T* a, int64_t k0, int64_t k1, const WP* w_k0, const T* scales,
                            int64_t scale_stride, T* const* c, int64_t c_offset, const char* prefetch,
                            int64_t prefetch_lines) {
    if constexpr (R > 1) {
      if (height < R)
        return gemm_any_tile<R - 1>(height, a, k0, k1, w_k0, scales, scale_stride, c, c_offset, prefetch, prefetch_lines);
    }
    gemm_tile<R>(a, k0, k1, w_k0, scales, scale_stride, c, c_offset, prefetch, prefetch_lines);
  }

  // A gate's block of stored weights (n k from w, n a whole number of k steps) widened once into
  // float k-major runs, the T layout: every row tile of a GEMM then reads T weights instead of
  // widening them again (with AVX2 and 32 rows, six times: bf16 took 1.26x and int8 2.1x float32's
  // time at batch 32). The same values in the same order, so the results do not change.
  static void widen_block(const W* w, int64_t n, T* slab) {
    for (int64_t k = 0; k < n; k += kStep, w += kPanel * kStep)
      for (int v = 0; v < kVecsPerPanel; ++v) {
        Reg wv[kStep];
        load_weights(w + v * V::kWidth * kStep, wv);
        for (int s = 0; s < kStep; ++s) V::store(slab + (k + s) * kPanel + v * V::kWidth, wv[s]);
      }
  }

  // ------------------------------------------------------------------------ dot products
  static int64_t dot_steps(int64_t k) { return (k + kStep - 1) / kStep; }

  // One row of activations split for the dot-product instruction: the high and the low bytes of
  // k step q in words hi[q] and lo[q] (k padded with zeros to whole steps), and the row's scale.
  struct SplitRow {
    const uint32_t* hi;
    const uint32_t* lo;
    T scale;
  };

  // Splits a row of k values, writing step q's words at hi[q * stride] and lo[q * stride]; returns
  // the row's scale: a[k] ~ scale * (256 * (hi byte - 128) + lo byte), the row rounded to integers
  // in [-32767, 32767] of its largest magnitude. 16 bits keep the activations' rounding far below
  // the int8 weights' (8 bits would be torch's error). A row holding inf or NaN gets a NaN scale, so
  // its results are NaN as in float32.
  static T split_row(const T* a, int64_t k, uint32_t* hi, uint32_t* lo, int64_t stride) {
    static_assert(kScaled, "the dot-product kernels are int8's");
    T largest = 0, poison = 0;
    for (int64_t i = 0; i < k; ++i) {
      const T magnitude = a[i] < 0 ? -a[i] : a[i];
      largest = magnitude > largest ? magnitude : largest;
      poison += a[i] * T(0);  // NaN if any value is inf or NaN
    }
    const T inverse = largest > 0 ? T(32767) / largest : T(0);
    for (int64_t q = 0; q < dot_steps(k); ++q) {
      uint32_t high = 0, low = 0;
      for (int j = 0; j < kStep; ++j) {
        const int64_t i = kStep * q + j;
        const T scaled = i < k && largest > 0 && poison == 0 ? a[i] * inverse : T(0);
        const int32_t value = static_cast<int32_t>(std::nearbyint(scaled));  // |scaled| <= 32767
        low |= uint32_t(value & 0xFF) << (8 * j);
        high |= uint32_t(((value >> 8) + 128) & 0xFF) << (8 * j);
      }
      hi[q * stride] = high;
      lo[q * stride] = low;
    }
    return poison == 0 ? largest / T(32767) : poison;
  }

  // A group's dot product (its two parts) converted and times the weights' scales and the row's, into acc.
  template <class DReg>
  static Reg add_group(DReg high, DReg low, const int32_t* sums, const T* scales, T row_scale, Reg acc) {
    return V::fmadd(V::combine(high, low, sums), V::mul(V::load(scales), V::set1(row_scale)), acc);
  }

  // gemm_tile with the dot-product instruction, for R rows split by pack_rows (hi: the tile's high
  // words, its low words R * kq further; a_scales: the rows' scales) and the group sums of the
  // weights beside their scales.
  template <int R>
  static void gemm_tile_dot(const uint32_t* hi, int64_t kq, const T* a_scales, int64_t k0, int64_t k1, const W* w_k0,
                             const T* scales, const int32_t* sums, int64_t scale_stride, T* const* c, int64_t c_offset,
                             const char* prefetch, int64_t prefetch_lines) {
    using DReg = typename V::DReg;
    const uint32_t* lo = hi + R * kq;
    Reg acc[R][kVecsPerPanel];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < kVecsPerPanel; ++v) acc[r][v] = V::zero();
    for (int64_t g0 = k0; g0 < k1; g0 += kGroup) {
      const int64_t g1 = k1 - g0 < kGroup ? k1 : g0 + kGroup;
      DReg high[R][kVecsPerPanel], low[R][kVecsPerPanel];
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < kVecsPerPanel; ++v) high[r][v] = low[r][v] = V::dzero();
      const W* wq = w_k0 + (g0 - k0) * kPanel;
      for (int64_t q = g0 / kStep; q < dot_steps(g1); ++q, wq += kPanel * kStep) {
        if (prefetch_lines > 0) {
          __builtin_prefetch(prefetch, 0, 2);
          prefetch += 64;
          --prefetch_lines;
        }
        DReg wv[kVecsPerPanel];
        for (int v = 0; v < kVecsPerPanel; ++v) wv[v] = V::load_dot(wq + v * V::kWidth * kStep);
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < kVecsPerPanel; ++v) {
            high[r][v] = V::dot_add(high[r][v], hi[q * R + r], wv[v]);
            low[r][v] = V::dot_add(low[r][v], lo[q * R + r], wv[v]);
          }
      }
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < kVecsPerPanel; ++v)
          acc[r][v] = add_group(high[r][v], low[r][v], sums + v * V::kWidth, scales + v * V::kWidth, a_scales[r], acc[r][v]);
      scales += scale_stride;
      sums += scale_stride;
    }
    for (int r = 0; r < R; ++r) {
      T* out = c[r] + c_offset;
      for (int v = 0; v < kVecsPerPanel; ++v) V::store(out + v * V::kWidth, V::add(V::load(out + v * V::kWidth), acc[r][v]));
    }
  }

  template <int R = kRowTile>
  static void gemm_any_tile_dot(int64_t height, const uint32_t* hi, int64_t kq, const T* a_scales, int64_t k0, int64_t k1,
                                 const W* w_k0, const T* scales, const int32_t* sums, int64_t scale_stride, T* const* c,
                                 int64_t c_offset, const char* prefetch, int64_t prefetch_lines) {
    if constexpr (R > 1) {
      if (height < R)
        return gemm_any_tile_dot<R - 1>(height, hi, kq, a_scales, k0, k1, w_k0, scales, sums, scale_stride, c, c_offset,
                                         prefetch, prefetch_lines);
    }
    gemm_tile_dot<R>(hi, kq, a_scales, k0, k1, w_k0, scales, sums, scale_stride, c, c_offset, prefetch, prefetch_lines);
  }

  // add_blocks with the dot-product instruction, on split rows: the same sums as gemm_tile_dot, in
  // the same order.
  template <int G, int NP, int R>
  static void add_blocks_dot(const SplitRow* a, int64_t k, const W* w, const T* scales, const int32_t* sums, int64_t p,
                             Reg (&acc)[R][NP][G][kVecsPerPanel]) {
    using DReg = typename V::DReg;
    const int64_t ks = stored_k<W>(k);
    const int64_t w_panel = ks * G * kPanel;
    const int64_t s_panel = scale_groups(k) * G * kPanel;
    for (int64_t k0 = 0; k0 < k; k0 += kKBlock) {
      const int64_t k1 = k0 + kKBlock < k ? k0 + kKBlock : k;
      Reg part[R][NP][G][kVecsPerPanel];
      zero_all(part);
      const int64_t w_gate = ((k0 + kKBlock < ks ? k0 + kKBlock : ks) - k0) * kPanel;
      const W* wk = w + p * w_panel + k0 * G * kPanel;
      const int64_t first = (p * scale_groups(k) + k0 / kGroup) * G * kPanel;
      const T* s = scales + first;
      const int32_t* m = sums + first;
      for (int64_t g0 = k0; g0 < k1; g0 += kGroup) {
        const int64_t g1 = g0 + kGroup < k1 ? g0 + kGroup : k1;
        DReg high[R][NP][G][kVecsPerPanel], low[R][NP][G][kVecsPerPanel];
        for (int r = 0; r < R; ++r)
          for (int q = 0; q < NP; ++q)
            for (int g = 0; g < G; ++g)
              for (int v = 0; v < kVecsPerPanel; ++v) high[r][q][g][v] = low[r][q][g][v] = V::dzero();
        const W* wq = wk + (g0 - k0) * kPanel;
        for (int64_t quad = g0 / kStep; quad < dot_steps(g1); ++quad, wq += kPanel * kStep) {
          uint32_t h[R], l[R];
          for (int r = 0; r < R; ++r) {
            h[r] = a[r].hi[quad];
            l[r] = a[r].lo[quad];
          }
          for (int q = 0; q < NP; ++q)
            for (int g = 0; g < G; ++g)
              for (int v = 0; v < kVecsPerPanel; ++v) {
                const DReg wv = V::load_dot(wq + q * w_panel + g * w_gate + v * V::kWidth * kStep);
                for (int r = 0; r < R; ++r) {
                  high[r][q][g][v] = V::dot_add(high[r][q][g][v], h[r], wv);
                  low[r][q][g][v] = V::dot_add(low[r][q][g][v], l[r], wv);
                }
              }
        }
        for (int r = 0; r < R; ++r)
          for (int q = 0; q < NP; ++q)
            for (int g = 0; g < G; ++g)
              for (int v = 0; v < kVecsPerPanel; ++v) {
                const int64_t at = q * s_panel + g * kPanel + v * V::kWidth;
                part[r][q][g][v] = add_group(high[r][q][g][v], low[r][q][g][v], m + at, s + at, a[r].scale,
                                             part[r][q][g][v]);
              }
        s += G * kPanel;
        m += G * kPanel;
      }
      for (int r = 0; r < R; ++r)
        for (int q = 0; q < NP; ++q)
          for (int g = 0; g < G; ++g)
            for (int v = 0; v < kVecsPerPanel; ++v) acc[r][q][g][v] = V::add(acc[r][q][g][v], part[r][q][g][v]);
    }
  }

  // Splits `rows` rows of k values into scratch (2 * dot_steps(k) words each); returns the next free value.
  static T* split_rows(const T* const* a, int64_t rows, int64_t k, T* scratch, SplitRow* out) {
    const int64_t kq = dot_steps(k);
    for (int64_t r = 0; r < rows; ++r) {
      uint32_t* hi = reinterpret_cast<uint32_t*>(scratch) + 2 * r * kq;
      out[r] = {hi, hi + kq, split_row(a[r], k, hi, hi + kq, 1)};
    }
    return scratch + 2 * rows * kq;
  }

  static void gemm_accumulate(const GemmArgs<T, W>& args) {
    if (args.rows < kMinTiledRows) return args.gates == kGates ? gemm_rows_wide<kGates>(args) : gemm_rows_wide<1>(args);
    pack_rows(args);
    for (int64_t p = args.panel_begin; p < args.panel_end; ++p) gemm_panel(args, p);
  }

  // The step for many rows: z += h_prev W_hh^T panel by panel (rows packed as for gemm_accumulate),
  // each panel's cell update right after its GEMM, while its z values are still in L1.
  static void lstm_step_gemm(const GemmArgs<T, W>& gemm, const StepArgs<T, W>& step) {
    const bool tiled = gemm.rows >= kMinTiledRows;
    if (tiled) pack_rows(gemm);
    else gemm_accumulate(gemm);  // too few rows for tiles: row by row, all panels in one go
    for (int64_t p = gemm.panel_begin; p < gemm.panel_end; ++p) {
      if (tiled) gemm_panel(gemm, p);
      // z is this step's own scratch, so the activations can go in place.
      const int64_t offset = p * kGates * kPanel, unit = p * kPanel;
      for (int64_t r = 0; r < step.rows; ++r) activate_gates(gemm.c[r] + offset);
      for (int64_t r = 0; r < step.rows; ++r)
        update_cell(gemm.c[r] + offset, step.c + r * step.c_stride + unit, step.h_out[r] + unit, step.hidden_size - unit);
    }
  }

  // c[r] += a[r] @ W on panel p, for rows already packed by pack_rows.
  static void gemm_panel(const GemmArgs<T, W>& args, int64_t p) {
    const int64_t tiles = row_tiles(args.rows);
    const int64_t ks = stored_k<W>(args.k);
    const int64_t panel_values = ks * args.gates * kPanel;
    const int64_t scale_stride = args.gates * kPanel;  // from one k group's scales to the next
    const char* weights_end = reinterpret_cast<const char*>(args.w + args.panel_end * panel_values);
    for (int64_t k0 = 0; k0 < args.k; k0 += kKBlock) {
      const int64_t k1 = k0 + kKBlock < args.k ? k0 + kKBlock : args.k;
      const int64_t stored = (k0 + kKBlock < ks ? k0 + kKBlock : ks) - k0;  // the block's stored k
      const W* block = args.w + p * panel_values + k0 * args.gates * kPanel;
      const T* block_scales =
          kScaled ? args.w_scales + (p * scale_groups(args.k) + k0 / kGroup) * scale_stride : nullptr;
      // While the tiles run on this block, the next one (the weights right after it) is fetched
      // into L2, a share of its lines per tile, so the first tile on it does not wait for L3 or
      // memory. Each tile issues its share one line per k, spread over its FMAs: the same
      // prefetches as a burst before each tile stall it (bench/kernel_probe.sh shows the difference).
      const int64_t block_lines = stored * args.gates * kPanel * int64_t(sizeof(W)) / 64;
      const char* next = reinterpret_cast<const char*>(block) + block_lines * 64;
      int64_t lines_left = (weights_end - next) / 64;  // never past the end of this call's weights
      const int64_t lines_per_tile = (block_lines + args.gates * tiles - 1) / (args.gates * tiles);
      for (int64_t g = 0; g < args.gates; ++g) {
        const W* w = block + g * stored * kPanel;  // this gate's part of the block, k after k
        const T* scales = kScaled ? block_scales + g * kPanel : nullptr;
        const int64_t c_offset = (p * args.gates + g) * kPanel;
        [[maybe_unused]] alignas(64) T slab[kWidens ? kKBlock * kPanel : 1];
        const bool widened = kWidens && tiles > 1;  // one tile reads each weight once anyway
        if constexpr (kWidens) {
          if (widened) widen_block(w, stored, slab);
        }
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t lines = lines_per_tile < lines_left ? lines_per_tile : lines_left;
          const int64_t r0 = tile_start(args.rows, tiles, i), height = tile_start(args.rows, tiles, i + 1) - r0;
          if constexpr (kDot) {
            const int64_t kq = dot_steps(args.k);
            const uint32_t* hi = reinterpret_cast<const uint32_t*>(args.a_pack) + 2 * r0 * kq;
            const T* row_scales = args.a_pack + 2 * args.rows * kq + r0;
            const int32_t* sums = args.w_sums + (scales - args.w_scales);
            gemm_any_tile_dot(height, hi, kq, row_scales, k0, k1, w, scales, sums, scale_stride, args.c + r0, c_offset,
                               next, lines);
          } else if (widened) {
            gemm_any_tile(height, args.a_pack + r0 * args.k, k0, k1, static_cast<const T*>(slab), scales,
                          scale_stride, args.c + r0, c_offset, next, lines);
          } else {
            gemm_any_tile(height, args.a_pack + r0 * args.k, k0, k1, w, scales, scale_stride, args.c + r0, c_offset,
                          next, lines);
          }
          next += 64 * lines;
          lines_left -= lines;
        }
      }
    }
  }

  // Gate activations in place on one panel of one row (kGates x kPanel pre-activations, as in the
  // packed z layout): sigmoid for i, f, o, tanh for g. Each vector is independent of the others, so
  // a loop of these over several panels or rows runs at the activations' throughput instead of
  // waiting out each panel's latency chain (exp, then the division, then tanh of the new c).
  static void activate_gates(T* z) {
    for (int g = 0; g < kGates; ++g)
      for (int v = 0; v < kVecsPerPanel; ++v) {
        T* slot = z + g * kPanel + v * V::kWidth;
        V::store(slot, g == 2 ? V::tanh(V::load(slot)) : V::sigmoid(V::load(slot)));
      }
  }

  // The cell update for one panel of one row, from its gate activations (left by activate_gates).
  static void update_cell(const T* act, T* c, T* h, int64_t valid_units) {
    Reg h_new[kVecsPerPanel];
    for (int v = 0; v < kVecsPerPanel; ++v) {
      const T* gate = act + v * V::kWidth;
      Reg c_new = V::fmadd(V::load(gate + kPanel), V::load(c + v * V::kWidth),
                           V::mul(V::load(gate), V::load(gate + 2 * kPanel)));
      V::store(c + v * V::kWidth, c_new);
      h_new[v] = V::mul(V::load(gate + 3 * kPanel), V::tanh(c_new));
    }
    if (valid_units >= kPanel) {
      for (int v = 0; v < kVecsPerPanel; ++v) V::store(h + v * V::kWidth, h_new[v]);
      return;
    }
    // h rows are unpadded (they may be the caller's output), so the last panel is written partially.
    alignas(64) T h_panel[kPanel];
    for (int v = 0; v < kVecsPerPanel; ++v) V::store(h_panel + v * V::kWidth, h_new[v]);
    for (int64_t u = 0; u < valid_units; ++u) h[u] = h_panel[u];
  }

  // acc[r][q][g] += sum_k a[r][k] * w[p+q][k][g] for R rows and NP consecutive panels: all G gates
  // at once, each weight vector loaded once for all R rows. Partial sums start from zero in each
  // reduction block and are added in block order, exactly as gemm_accumulate's tiles do, so a row's
  // result never depends on which kernel computed it, how many rows shared the loads, or how a call
  // was split across threads: hence bitwise independent of the batch and the thread count.
  // For int8 each block's part is the sum of its groups' sums times their scales, as in gemm_tile.
  template <int G, int NP, int R>
  static void add_blocks(const T* const* a, int64_t k, const W* w, const T* scales, int64_t p,
                         Reg (&acc)[R][NP][G][kVecsPerPanel]) {
    const int64_t ks = stored_k<W>(k);
    const int64_t w_panel = ks * G * kPanel;
    const int64_t s_panel = scale_groups(k) * G * kPanel;  // a panel's scales
    for (int64_t k0 = 0; k0 < k; k0 += kKBlock) {
      const int64_t k1 = k0 + kKBlock < k ? k0 + kKBlock : k;
      Reg part[R][NP][G][kVecsPerPanel];
      zero_all(part);
      const int64_t w_gate = ((k0 + kKBlock < ks ? k0 + kKBlock : ks) - k0) * kPanel;  // a gate's part of the block
      const W* wk = w + p * w_panel + k0 * G * kPanel;
      if constexpr (!kScaled) {
        multiply_add_rows(a, k0, k1, wk, w_panel, w_gate, part);
      } else {
        const T* s = scales + (p * scale_groups(k) + k0 / kGroup) * G * kPanel;
        for (int64_t g0 = k0; g0 < k1; g0 += kGroup, s += G * kPanel) {
          const int64_t g1 = g0 + kGroup < k1 ? g0 + kGroup : k1;
          Reg group[R][NP][G][kVecsPerPanel];
          zero_all(group);
          multiply_add_rows(a, g0, g1, wk + (g0 - k0) * kPanel, w_panel, w_gate, group);
          for (int r = 0; r < R; ++r)
            for (int q = 0; q < NP; ++q)
              for (int g = 0; g < G; ++g)
                for (int v = 0; v < kVecsPerPanel; ++v)
                  part[r][q][g][v] = V::fmadd(group[r][q][g][v], V::load(s + q * s_panel + g * kPanel + v * V::kWidth),
                                              part[r][q][g][v]);
        }
      }
      for (int r = 0; r < R; ++r)
        for (int q = 0; q < NP; ++q)
          for (int g = 0; g < G; ++g)
            for (int v = 0; v < kVecsPerPanel; ++v) acc[r][q][g][v] = V::add(acc[r][q][g][v], part[r][q][g][v]);
    }
  }

  template <int G, int NP, int R>
  static void zero_all(Reg (&regs)[R][NP][G][kVecsPerPanel]) {
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q)
        for (int g = 0; g < G; ++g)
          for (int v = 0; v < kVecsPerPanel; ++v) regs[r][q][g][v] = V::zero();
  }

  // sums[r][q][g] += sum over k in [k0, k1) of a[r][k] * w[q][g][k], from wk (k0's weights of the
  // first panel); panels are w_panel values apart, gates w_gate. Every sum takes its k in order.
  // Several rows' sums for whole panels may not fit in half the registers (AVX2: a panel is two
  // vectors, so two rows would need all sixteen); then the sums go one vector of each panel at a
  // time, over runs of kVectorPassK k whose weights stay in L1 for the next vector's pass. Each sum
  // still takes its k in order: the same result as in one pass.
  template <int G, int NP, int R>
  static void multiply_add_rows(const T* const* a, int64_t k0, int64_t k1, const W* wk, int64_t w_panel, int64_t w_gate,
                                Reg (&sums)[R][NP][G][kVecsPerPanel]) {
    if constexpr (R == 1 || R * NP * G * kVecsPerPanel <= V::kRegisters / 2) {
      multiply_add_vectors<G, NP, R, kVecsPerPanel>(a, k0, k1, wk, w_panel, w_gate, 0, sums);
    } else {
      for (int64_t s0 = k0; s0 < k1; s0 += kVectorPassK) {
        const int64_t s1 = s0 + kVectorPassK < k1 ? s0 + kVectorPassK : k1;
        for (int v = 0; v < kVecsPerPanel; ++v) {
          Reg one[R][NP][G][1];
          for (int r = 0; r < R; ++r)
            for (int q = 0; q < NP; ++q)
              for (int g = 0; g < G; ++g) one[r][q][g][0] = sums[r][q][g][v];
          multiply_add_vectors<G, NP, R, 1>(a, s0, s1, wk + (s0 - k0) * kPanel, w_panel, w_gate, v, one);
          for (int r = 0; r < R; ++r)
            for (int q = 0; q < NP; ++q)
              for (int g = 0; g < G; ++g) sums[r][q][g][v] = one[r][q][g][0];
        }
      }
    }
  }
  // A multiple of every k step, so that each run starts on a stored word.
  static constexpr int64_t kVectorPassK = 64;

  // multiply_add_rows for VS vectors of each panel, from vector v0.
  template <int G, int NP, int R, int VS>
  static void multiply_add_vectors(const T* const* a, int64_t k0, int64_t k1, const W* wk, int64_t w_panel,
                                   int64_t w_gate, int v0, Reg (&sums)[R][NP][G][VS]) {
    int64_t kk = k0;
    for (; kk + kStep <= k1; kk += kStep, wk += kPanel * kStep) rows_step(kStep, a, kk, wk, w_panel, w_gate, v0, sums);
    if (kk < k1) rows_step(static_cast<int>(k1 - kk), a, kk, wk, w_panel, w_gate, v0, sums);  // padding past k1 unread
  }

  // The first `steps` (<= kStep) k of the k step at kk of multiply_add_vectors.
  template <int G, int NP, int R, int VS>
  static void rows_step(int steps, const T* const* a, int64_t kk, const W* wk, int64_t w_panel, int64_t w_gate, int v0,
                        Reg (&sums)[R][NP][G][VS]) {
    Reg b[kStep][R];
    for (int s = 0; s < steps; ++s)
      for (int r = 0; r < R; ++r) b[s][r] = V::set1(a[r][kk + s]);
    for (int q = 0; q < NP; ++q)
      for (int g = 0; g < G; ++g)
        for (int v = 0; v < VS; ++v) {
          Reg wv[kStep];
          load_weights(wk + q * w_panel + g * w_gate + (v0 + v) * V::kWidth * kStep, wv);
          for (int s = 0; s < steps; ++s)
            for (int r = 0; r < R; ++r) sums[r][q][g][v] = V::fmadd(wv[s], b[s][r], sums[r][q][g][v]);
        }
  }

  // acc[r] = one accumulator row's values (z[r], or `shared` for every row) on panels p.. p+NP.
  template <int G, int NP, int R>
  static void load_accumulators(const T* const* z, const T* shared, int64_t p, Reg (&acc)[R][NP][G][kVecsPerPanel]) {
    for (int r = 0; r < R; ++r) {
      const T* row = shared != nullptr ? shared : z[r];
      for (int q = 0; q < NP; ++q)
        for (int g = 0; g < G; ++g)
          for (int v = 0; v < kVecsPerPanel; ++v) acc[r][q][g][v] = V::load(row + ((p + q) * G + g) * kPanel + v * V::kWidth);
    }
  }

  // Panels per pass giving about eight accumulators for G gates.
  template <int G>
  static constexpr int kRowPanels = G * kVecsPerPanel >= 8 ? 1 : 8 / (G * kVecsPerPanel);

  // c[r] += a[r] @ W one row at a time, for the few-row case where row tiles would be too short.
  template <int G>
  static void gemm_rows_wide(const GemmArgs<T, W>& args) {
    constexpr int NP = kRowPanels<G>;
    for (int64_t r = 0; r < args.rows; ++r) {
      T* c = args.c[r];
      [[maybe_unused]] SplitRow split{};
      if constexpr (kDot) split_rows(&args.a[r], 1, args.k, args.a_pack, &split);
      auto pass = [&](auto panels, int64_t p) {
        constexpr int N = decltype(panels)::value;
        Reg acc[1][N][G][kVecsPerPanel];
        load_accumulators<G, N, 1>(&args.c[r], nullptr, p, acc);
        if constexpr (kDot) {
          add_blocks_dot<G, N, 1>(&split, args.k, args.w, args.w_scales, args.w_sums, p, acc);
        } else {
          add_blocks<G, N, 1>(&args.a[r], args.k, args.w, args.w_scales, p, acc);
        }
        for (int q = 0; q < N; ++q)
          for (int g = 0; g < G; ++g)
            for (int v = 0; v < kVecsPerPanel; ++v) V::store(c + ((p + q) * G + g) * kPanel + v * V::kWidth, acc[0][q][g][v]);
      };
      int64_t p = args.panel_begin;
      for (; p + NP <= args.panel_end; p += NP) pass(std::integral_constant<int, NP>(), p);
      for (; p < args.panel_end; ++p) pass(std::integral_constant<int, 1>(), p);
    }
  }

  // Rows of the fused step sharing each weight load: as many as keep their partial sums (one vector
  // per gate with AVX2, see multiply_add_rows) in half the vector registers: 4 with AVX-512's 32,
  // 2 with AVX2's 16, 1 for the scalar kernels. A single row instead takes several panels at once
  // for enough independent FMA chains.
  static constexpr int kFusedRowsFit = V::kRegisters / 2 / (kGates * (kTwoVectorPanels ? 1 : kVecsPerPanel));
  // With dot-product instructions each row keeps two sums per accumulator besides the float one: two rows.
  static constexpr int kFusedRows = kDot ? 2 : kFusedRowsFit < 1 ? 1 : (kFusedRowsFit > 4 ? 4 : kFusedRowsFit);

  // The most rows the fused step takes; more go to lstm_step_gemm. Measured on Zen 3 (AVX2, medium's
  // network): per sequence, a 2-row sweep costs 0.81x a lone row's, a 3-row GEMM tile 0.66-0.78x
  // against 0.87x for sweeps of 2 + 1 rows. With AVX-512 one sweep holds 4 rows; the dot-product
  // kernels (2 rows a sweep) and the scalar ones (1; their GEMM is slower still) keep 4.
  static constexpr int64_t kFusedStepMaxRows = kTwoVectorPanels ? kFusedRows : 4;

  // Panels whose cell updates the fused step holds back and runs together: enough independent
  // activation vectors to keep the FP units busy, few enough that their pre-activations stay in L1.
  static constexpr int kDeferredPanels = 4;

  // The fused step for rows [r0, r0 + R): per panel, z (or the bias, then x W_ih) + h W_hh, then the
  // cell update. Panels are swept upward or downward (see lstm_step_fused). The updates go in
  // batches of kDeferredPanels: one panel's update alone is a long latency chain that would stall
  // the weight stream, while a batch of them overlaps.
  template <int R>
  static void step_rows(const StepArgs<T, W>& args, int64_t r0, bool downward) {
    constexpr int NP = R == 1 ? kRowPanels<kGates> : 1;
    static_assert(kDeferredPanels % NP == 0, "a pass's panels must fit in the deferred batch");
    alignas(64) T deferred[kDeferredPanels][R][kGates * kPanel];  // pre-activations, packed z layout
    int64_t deferred_panel[kDeferredPanels];
    int pending = 0;
    // Dot-product kernels: the rows' activations, split once for the whole sweep.
    [[maybe_unused]] SplitRow split_x[R], split_h[R];
    if constexpr (kDot) {
      T* free = split_rows(args.h_prev + r0, R, args.k, args.scratch, split_h);
      if (args.x != nullptr) split_rows(args.x + r0, R, args.k_in, free, split_x);
    }
    auto update_deferred = [&]() {
      for (int i = 0; i < pending; ++i)
        for (int r = 0; r < R; ++r) activate_gates(deferred[i][r]);
      for (int i = 0; i < pending; ++i)
        for (int r = 0; r < R; ++r) {
          const int64_t unit = deferred_panel[i] * kPanel;
          update_cell(deferred[i][r], args.c + (r0 + r) * args.c_stride + unit, args.h_out[r0 + r] + unit,
                      args.hidden_size - unit);
        }
      pending = 0;
    };
    auto pass = [&](auto panels, int64_t p) {
      constexpr int N = decltype(panels)::value;
      Reg acc[R][N][kGates][kVecsPerPanel];
      if (args.x != nullptr) {
        // The input projection rides along, summed in the same order as its GEMM would.
        load_accumulators<kGates, N, R>(nullptr, args.bias, p, acc);
        if constexpr (kDot) {
          add_blocks_dot<kGates, N, R>(split_x, args.k_in, args.w_ih, args.w_ih_scales, args.w_ih_sums, p, acc);
        } else {
          add_blocks<kGates, N, R>(args.x + r0, args.k_in, args.w_ih, args.w_ih_scales, p, acc);
        }
      } else {
        load_accumulators<kGates, N, R>(args.z + r0, nullptr, p, acc);
      }
      if constexpr (kDot) {
        add_blocks_dot<kGates, N, R>(split_h, args.k, args.w_hh, args.w_hh_scales, args.w_hh_sums, p, acc);
      } else {
        add_blocks<kGates, N, R>(args.h_prev + r0, args.k, args.w_hh, args.w_hh_scales, p, acc);
      }
      if (pending + N > kDeferredPanels) update_deferred();
      for (int q = 0; q < N; ++q, ++pending) {
        deferred_panel[pending] = p + q;
        for (int r = 0; r < R; ++r)
          for (int g = 0; g < kGates; ++g)
            for (int v = 0; v < kVecsPerPanel; ++v) V::store(deferred[pending][r] + g * kPanel + v * V::kWidth, acc[r][q][g][v]);
      }
    };
    const int64_t panels = args.panel_end - args.panel_begin;
    const int64_t whole = panels - panels % NP;
    if (!downward) {
      int64_t p = args.panel_begin;
      for (; p < args.panel_begin + whole; p += NP) pass(std::integral_constant<int, NP>(), p);
      for (; p < args.panel_end; ++p) pass(std::integral_constant<int, 1>(), p);
    } else {
      for (int64_t p = args.panel_end - 1; p >= args.panel_begin + whole; --p) pass(std::integral_constant<int, 1>(), p);
      for (int64_t p = args.panel_begin + whole - NP; p >= args.panel_begin; p -= NP) pass(std::integral_constant<int, NP>(), p);
    }
    update_deferred();
  }

  // Rows go in groups of up to kFusedRows, each group one sweep over the weights. Successive sweeps
  // alternate direction, so each starts on the weights the previous one touched last, still in
  // L1/L2 (bitwise the same: panels are independent).
  static int64_t lstm_step_fused(const StepArgs<T, W>& args) {
    int64_t sweeps = 0;
    for (int64_t r0 = 0; r0 < args.rows; ++sweeps)
      r0 += step_group<kFusedRows>(args, r0, ((args.sweep_parity + sweeps) & 1) != 0);
    return sweeps;
  }

  // Runs the largest group of at most R rows that fits the rows left; returns its size.
  template <int R>
  static int64_t step_group(const StepArgs<T, W>& args, int64_t r0, bool downward) {
    if constexpr (R > 1) {
      if (args.rows - r0 < R) return step_group<R - 1>(args, r0, downward);
    }
    step_rows<R>(args, r0, downward);
    return R;
  }

  static KernelTable<T, W> table(const char* isa) {
    KernelTable<T, W> t;
    t.isa = isa;
    t.gemm_accumulate = &gemm_accumulate;
    t.lstm_step_fused = &lstm_step_fused;
    t.lstm_step_gemm = &lstm_step_gemm;
    t.fused_step_max_rows = kFusedStepMaxRows;
    return t;
  }
};
