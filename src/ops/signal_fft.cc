// A float32 complex FFT that follows PocketFFT's Cooley-Tukey passes (radix 4, 2, 3, 5) operation by
// operation. The ONNX reference computes float32 DFTs with NumPy, which uses PocketFFT in single
// precision; values that are exactly zero in theory come out as float32 rounding noise there, and
// only the same sequence of float operations reproduces that noise within the conformance
// tolerance. Lengths with other factors are left to the double-precision DFT.
#include <cmath>
#include <complex>
#include <numbers>
#include <utility>
#include <vector>

namespace kiln {

namespace {

struct Cf {
  float r = 0, i = 0;
};
inline Cf operator+(Cf a, Cf b) {
  return {a.r + b.r, a.i + b.i};
}
inline Cf operator-(Cf a, Cf b) {
  return {a.r - b.r, a.i - b.i};
}
inline Cf operator*(Cf a, float s) {
  return {a.r * s, a.i * s};
}

template <bool kFwd>
inline Cf special_mul(Cf v, Cf w) {
  return kFwd ? Cf{v.r * w.r + v.i * w.i, v.i * w.r - v.r * w.i} : Cf{v.r * w.r - v.i * w.i, v.r * w.i + v.i * w.r};
}

template <bool kFwd>
inline void rotx90(Cf& a) {
  const float tmp = kFwd ? -a.r : a.r;
  a.r = kFwd ? a.i : -a.i;
  a.i = tmp;
}

inline void pm(Cf& a, Cf& b, Cf c, Cf d) {
  a = c + d;
  b = c - d;
}

struct Pass {
  size_t ido, l1;
  const Cf* cc;
  Cf* ch;
  const Cf* wa;
  size_t ip;
  Cf& CH(size_t a, size_t b, size_t c) const { return ch[a + ido * (b + l1 * c)]; }
  const Cf& CC(size_t a, size_t b, size_t c) const { return cc[a + ido * (b + ip * c)]; }
  Cf WA(size_t x, size_t i) const { return wa[i - 1 + x * (ido - 1)]; }
};

template <bool kFwd>
void pass2(const Pass& p) {
  for (size_t k = 0; k < p.l1; ++k) {
    p.CH(0, k, 0) = p.CC(0, 0, k) + p.CC(0, 1, k);
    p.CH(0, k, 1) = p.CC(0, 0, k) - p.CC(0, 1, k);
    for (size_t i = 1; i < p.ido; ++i) {
      p.CH(i, k, 0) = p.CC(i, 0, k) + p.CC(i, 1, k);
      p.CH(i, k, 1) = special_mul<kFwd>(p.CC(i, 0, k) - p.CC(i, 1, k), p.WA(0, i));
    }
  }
}

template <bool kFwd>
void pass3(const Pass& p) {
  constexpr float tw1r = -0.5f, tw1i = (kFwd ? -1 : 1) * 0.8660254037844386467637231707529362f;
  for (size_t k = 0; k < p.l1; ++k)
    for (size_t i = 0; i < p.ido; ++i) {
      const Cf t0 = p.CC(i, 0, k);
      Cf t1, t2;
      pm(t1, t2, p.CC(i, 1, k), p.CC(i, 2, k));
      p.CH(i, k, 0) = t0 + t1;
      const Cf ca = t0 + t1 * tw1r;
      const Cf cb{-t2.i * tw1i, t2.r * tw1i};
      if (i == 0) {
        pm(p.CH(0, k, 1), p.CH(0, k, 2), ca, cb);
      } else {
        p.CH(i, k, 1) = special_mul<kFwd>(ca + cb, p.WA(0, i));
        p.CH(i, k, 2) = special_mul<kFwd>(ca - cb, p.WA(1, i));
      }
    }
}

template <bool kFwd>
void pass4(const Pass& p) {
  for (size_t k = 0; k < p.l1; ++k)
    for (size_t i = 0; i < p.ido; ++i) {
      Cf t1, t2, t3, t4;
      pm(t2, t1, p.CC(i, 0, k), p.CC(i, 2, k));
      pm(t3, t4, p.CC(i, 1, k), p.CC(i, 3, k));
      rotx90<kFwd>(t4);
      if (i == 0) {
        pm(p.CH(0, k, 0), p.CH(0, k, 2), t2, t3);
        pm(p.CH(0, k, 1), p.CH(0, k, 3), t1, t4);
      } else {
        p.CH(i, k, 0) = t2 + t3;
        p.CH(i, k, 1) = special_mul<kFwd>(t1 + t4, p.WA(0, i));
        p.CH(i, k, 2) = special_mul<kFwd>(t2 - t3, p.WA(1, i));
        p.CH(i, k, 3) = special_mul<kFwd>(t1 - t4, p.WA(2, i));
      }
    }
}

template <bool kFwd>
void pass5(const Pass& p) {
  constexpr float tw1r = 0.3090169943749474241022934171828191f,
                  tw1i = (kFwd ? -1 : 1) * 0.9510565162951535721164393333793821f,
                  tw2r = -0.8090169943749474241022934171828191f,
                  tw2i = (kFwd ? -1 : 1) * 0.5877852522924731291687059546390728f;
  for (size_t k = 0; k < p.l1; ++k)
    for (size_t i = 0; i < p.ido; ++i) {
      const Cf t0 = p.CC(i, 0, k);
      Cf t1, t2, t3, t4;
      pm(t1, t4, p.CC(i, 1, k), p.CC(i, 4, k));
      pm(t2, t3, p.CC(i, 2, k), p.CC(i, 3, k));
      p.CH(i, k, 0) = Cf{t0.r + t1.r + t2.r, t0.i + t1.i + t2.i};
      // (u1, u2, twar, twbr, twai, twbi) as in PocketFFT's PARTSTEP5 macros.
      auto step = [&](size_t u1, size_t u2, float twar, float twbr, float twai, float twbi) {
        Cf ca, cb;
        ca.r = t0.r + twar * t1.r + twbr * t2.r;
        ca.i = t0.i + twar * t1.i + twbr * t2.i;
        cb.i = twai * t4.r + twbi * t3.r;
        cb.r = -(twai * t4.i + twbi * t3.i);
        if (i == 0) {
          pm(p.CH(0, k, u1), p.CH(0, k, u2), ca, cb);
        } else {
          p.CH(i, k, u1) = special_mul<kFwd>(ca + cb, p.WA(u1 - 1, i));
          p.CH(i, k, u2) = special_mul<kFwd>(ca - cb, p.WA(u2 - 1, i));
        }
      };
      step(1, 4, tw1r, tw2r, tw1i, tw2i);
      step(2, 3, tw2r, tw1r, tw2i, -tw1i);
    }
}

}  // namespace

// In-place FFT of c (length n); the inverse is unnormalized and every output is multiplied by fct.
// Returns false (leaving c untouched) for lengths this emulation does not cover.
bool pocketfft_c2c_f32(std::vector<std::complex<float>>& c, bool forward, float fct) {
  const size_t n = c.size();
  if (n == 0) return false;
  std::vector<size_t> fact;
  size_t len = n;
  if (len % 8 == 0) return false;  // PocketFFT may use a radix-8 pass here
  while ((len & 3) == 0) {
    fact.push_back(4);
    len >>= 2;
  }
  if ((len & 1) == 0) {
    len >>= 1;
    fact.push_back(2);
    std::swap(fact.front(), fact.back());
  }
  for (size_t d = 3; d * d <= len; d += 2)
    while (len % d == 0) {
      fact.push_back(d);
      len /= d;
    }
  if (len > 1) fact.push_back(len);
  for (size_t f : fact)
    if (f != 2 && f != 3 && f != 4 && f != 5) return false;

  // Twiddles exp(+2 pi i m / n) rounded to float; each pass picks its own.
  std::vector<std::vector<Cf>> tw(fact.size());
  size_t l1 = 1;
  for (size_t k = 0; k < fact.size(); ++k) {
    const size_t ip = fact[k], ido = n / (l1 * ip);
    tw[k].resize((ip - 1) * (ido - 1) + 1);
    for (size_t j = 1; j < ip; ++j)
      for (size_t i = 1; i < ido; ++i) {
        const long double a =
            2.0L * std::numbers::pi_v<long double> * static_cast<long double>(j * l1 * i) / static_cast<long double>(n);
        tw[k][(j - 1) * (ido - 1) + i - 1] = Cf{static_cast<float>(std::cos(a)), static_cast<float>(std::sin(a))};
      }
    l1 *= ip;
  }
  std::vector<Cf> a(n), b(n);
  for (size_t i = 0; i < n; ++i) a[i] = Cf{c[i].real(), c[i].imag()};
  if (n > 1) {
    Cf* p1 = a.data();
    Cf* p2 = b.data();
    l1 = 1;
    for (size_t k = 0; k < fact.size(); ++k) {
      const size_t ip = fact[k], l2 = ip * l1, ido = n / l2;
      Pass p{ido, l1, p1, p2, tw[k].data(), ip};
      switch (ip) {
        case 2: forward ? pass2<true>(p) : pass2<false>(p); break;
        case 3: forward ? pass3<true>(p) : pass3<false>(p); break;
        case 4: forward ? pass4<true>(p) : pass4<false>(p); break;
        default: forward ? pass5<true>(p) : pass5<false>(p); break;
      }
      std::swap(p1, p2);
      l1 = l2;
    }
    if (p1 != a.data()) a.swap(b);
  }
  for (size_t i = 0; i < n; ++i) {
    Cf v = fct != 1.0f ? a[i] * fct : a[i];
    c[i] = {v.r, v.i};
  }
  return true;
}

}  // namespace kiln
