// calocoffea's hot path in C++ for RDataFrame: the same formulas, the same random numbers.
//
// Declared once into ROOT's interpreter by calocoffea.rdf (ROOT.gInterpreter.Declare); the
// objects below are filled from Python with calocoffea's dense per-cell arrays, and the
// RDataFrame analysis calls them on RVec columns. Every function mirrors one in Python:
//
//   calocoffea::rng::*            calocoffea/rng.py          (SplitMix64 keys, exact samplers)
//   CellLookup::index             Geometry.cell_index        (layer, i, j) -> dense cell index
//   CalibrationChain::hit         calibration.calibrate      ADC -> MIP (or GeV), per hit
//   Calibration::operator()       the same on dense per-cell arrays (the hot path)
//   Digitizer::operator()         digitization.digitize      MeV -> ADC, gain, flags, kept
//
// Operations are written in the order numpy evaluates them and floating-point contraction is
// off, so results are bit-identical to calocoffea's (the tests check this).
#pragma once
#pragma clang fp contract(off)

#include <ROOT/RDF/RSampleInfo.hxx>
#include <ROOT/RVec.hxx>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace calocoffea {

// hit flag bits (calocoffea.flags.HitFlag)
constexpr std::uint32_t kLowGain = 1, kSaturated = 2, kDead = 4, kNoisy = 8, kExtrapolated = 16;

// ------------------------------------------------------------------ random numbers (rng.py)
namespace rng {
constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

inline std::uint64_t mix64(std::uint64_t z)
{
   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
   z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
   return z ^ (z >> 31);
}

// one step of a SplitMix64 sequence: 53 random bits centred in their bin, strictly in (0, 1)
inline double next(std::uint64_t &state)
{
   state += kGolden;
   return (double(mix64(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

inline std::uint64_t event_key(std::uint64_t file_key, std::uint64_t entry)
{
   return mix64(mix64(entry * kGolden + file_key));
}

// key of hit ``index`` of an event for stream ``code`` (rng.STREAMS)
inline std::uint64_t stream_key(std::uint64_t event_key, std::uint64_t index, int code)
{
   return mix64(event_key ^ mix64(((index << 5) + std::uint64_t(code)) * kGolden + kGolden));
}

inline double normal(std::uint64_t key)
{
   const double u1 = next(key);
   const double u2 = next(key);
   return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

inline std::int64_t poisson(std::uint64_t state, double lam)
{
   if (!(lam > 0.0))
      return 0;
   if (lam < 10.0) {
      double u = next(state);
      double p = std::exp(-lam);
      std::int64_t k = 0;
      while (u > p && k < 1000) {
         u -= p;
         k += 1;
         p *= lam / double(k);
      }
      return k;
   }
   const double slam = std::sqrt(lam), loglam = std::log(lam);
   const double b = 0.931 + 2.53 * slam;
   const double a = -0.059 + 0.02483 * b;
   const double log_invalpha = std::log(1.1239 + 1.1328 / (b - 3.4));
   const double vr = 0.9277 - 3.6224 / (b - 2.0);
   while (true) {
      double u = next(state);
      const double v = next(state);
      u -= 0.5;
      const double us = 0.5 - std::fabs(u);
      const std::int64_t k = std::int64_t(std::floor((2.0 * a / us + b) * u + lam + 0.43));
      if (us >= 0.07 && v <= vr)
         return k;
      if (k < 0 || (us < 0.013 && v > us))
         continue;
      if (std::log(v) + log_invalpha - std::log(a / (us * us) + b) <=
          -lam + double(k) * loglam - std::lgamma(double(k) + 1.0))
         return k;
   }
}

// float ** int as numba computes it: exponentiation by squaring
inline double int_power(double x, std::int64_t n)
{
   double result = 1.0;
   while (n) {
      if (n & 1)
         result *= x;
      n >>= 1;
      x *= x;
   }
   return result;
}

inline std::int64_t binomial_small(std::uint64_t state, std::int64_t n, double p)
{
   const double q = 1.0 - p, s = p / q, a = double(n + 1) * s;
   double r = int_power(q, n);
   double u = next(state);
   std::int64_t k = 0;
   while (u > r && k < n) {
      u -= r;
      k += 1;
      r *= a / double(k) - s;
   }
   return k;
}

inline std::int64_t binomial_btrs(std::uint64_t state, std::int64_t n, double p)
{
   const double q = 1.0 - p;
   const double spq = std::sqrt(double(n) * p * q);
   const double b = 1.15 + 2.53 * spq;
   const double a = -0.0873 + 0.0248 * b + 0.01 * p;
   const double c = double(n) * p + 0.5;
   const double alpha = (2.83 + 5.1 / b) * spq;
   const double vr = 0.92 - 4.2 / b;
   const std::int64_t m = std::int64_t(std::floor(double(n + 1) * p));
   const double lpq = std::log(p / q);
   const double h = std::lgamma(double(m) + 1.0) + std::lgamma(double(n - m) + 1.0);
   while (true) {
      double u = next(state);
      const double v = next(state);
      u -= 0.5;
      const double us = 0.5 - std::fabs(u);
      const std::int64_t k = std::int64_t(std::floor((2.0 * a / us + b) * u + c));
      if (k < 0 || k > n)
         continue;
      if (us >= 0.07 && v <= vr)
         return k;
      const double lv = std::log(v * alpha / (a / (us * us) + b));
      if (lv <= h - std::lgamma(double(k) + 1.0) - std::lgamma(double(n - k) + 1.0) +
                   double(k - m) * lpq)
         return k;
   }
}

inline std::int64_t binomial(std::uint64_t key, std::int64_t n, double p)
{
   if (n <= 0 || !(p > 0.0))
      return 0;
   if (p >= 1.0)
      return n;
   const bool flip = p > 0.5;
   const double pp = flip ? 1.0 - p : p;
   const std::int64_t k =
      double(n) * pp < 10.0 ? binomial_small(key, n, pp) : binomial_btrs(key, n, pp);
   return flip ? n - k : k;
}

// stream codes of rng.STREAMS
constexpr int kNonuniformity = 1, kPhotons = 2, kPixels = 3, kGainSmear = 4, kNoise = 5;
} // namespace rng

// ------------------------------------------------------------------ geometry
// Geometry._index_table, per layer: the cell of (layer, i, j) is table[offset + (i - i0) nj +
// (j - j0)] inside the layer's bounding box, -1 where the box holds no cell.
struct CellLookup {
   std::vector<std::int64_t> offset, i0, ni, j0, nj, table;

   std::int64_t index(int layer, int i, int j) const
   {
      if (layer >= 0 && std::size_t(layer) < offset.size()) {
         const std::int64_t di = i - i0[layer], dj = j - j0[layer];
         if (di >= 0 && di < ni[layer] && dj >= 0 && dj < nj[layer]) {
            const std::int64_t cell = table[offset[layer] + di * nj[layer] + dj];
            if (cell >= 0)
               return cell;
         }
      }
      throw std::runtime_error("calocoffea: hit (layer " + std::to_string(layer) + ", i " +
                               std::to_string(i) + ", j " + std::to_string(j) +
                               ") is not a cell of the geometry; was the file made for another "
                               "geometry?");
   }
};

// per-file random keys: the file of an RDataFrame task (rdfsampleinfo_) -> its key
struct FileKeys {
   std::vector<std::string> names;
   std::vector<std::uint64_t> keys;

   std::uint64_t of(const ROOT::RDF::RSampleInfo &info) const
   {
      const std::string id = info.AsString(); // "<file>/<tree>"
      for (std::size_t k = 0; k < names.size(); ++k)
         if (id.rfind(names[k], 0) == 0 && id.size() > names[k].size() && id[names[k].size()] == '/')
            return keys[k];
      throw std::runtime_error("calocoffea: no random key for " + id);
   }
};

// The entry of an event in its file, which keys its random numbers. rdfentry_ is not it: with
// implicit multi-threading it counts entries in the order tasks start. A task (DefinePerSample
// runs once per task and slot) is a contiguous range of one file's entries, starting at
// rdfsampleinfo_.EntryRange().first and processed in order on one slot, with rdfentry_
// contiguous too: so the entry is that start plus rdfentry_ minus the task's first rdfentry_.
struct EntryInFile {
   std::vector<std::uint64_t> task, first; // per slot: current task and its first rdfentry_
   std::atomic<std::uint64_t> tasks{0};

   EntryInFile() {}
   void slots(unsigned n) { task.assign(n, 0), first.assign(n, 0); }
   std::uint64_t new_task() { return ++tasks; }

   std::uint64_t entry(unsigned slot, std::uint64_t this_task, std::uint64_t rdfentry,
                       std::uint64_t range_first)
   {
      if (task[slot] != this_task) {
         task[slot] = this_task;
         first[slot] = rdfentry;
      }
      return range_first + (rdfentry - first[slot]);
   }
};

// ------------------------------------------------------------------ calibration
inline double inverse_nonlinearity(double y, double a, double b, double scale)
{
   const double denominator = b - a * y / scale;
   return denominator > 0 ? y / denominator : INFINITY;
}

inline double desaturation(double fired, double n_pixels, double occupancy)
{
   const double r = occupancy, fraction = fired / n_pixels;
   if (fraction <= r)
      return -n_pixels * std::log1p(-std::min(fraction, r));
   return (fired - r * n_pixels) / (1.0 - r) - n_pixels * std::log1p(-r);
}

// the constants of one cell that calibration.calibrate uses
struct CellConstants {
   double pedestal_hg_adc, pedestal_lg_adc, gain_ratio, spe_adc, n_pixels, light_yield_pe,
      nonlinearity_a, nonlinearity_b, scale;
};

// calibration.calibrate, hit by hit; the switches are CalibrationSteps'. Where the constants
// come from is the job of a derived struct: dense arrays (Calibration) or correctionlib.
struct CalibrationChain {
   double nonlinearity_scale_adc = 0, desaturation_occupancy = 0, lg_saturation_adc = 0;
   bool pedestal = true, gain_selection = true, nonlinearity = true, desaturate = true,
        apply_scale = true, to_gev = false;
   std::vector<double> gev_per_mip; // per layer: mip_mev / sampling_fraction / 1000

   // high-gain-equivalent amplitude [ADC] -> MIP (calibration._to_mip)
   double to_mip(double amplitude, const CellConstants &k) const
   {
      double x = amplitude;
      if (nonlinearity) {
         const double a = k.nonlinearity_a, b = k.nonlinearity_b, s = nonlinearity_scale_adc;
         x = inverse_nonlinearity(amplitude, a, b, s);
         if (!std::isfinite(x)) // clip just below the asymptote b X / a
            x = inverse_nonlinearity(0.999 * b * s / std::max(a, 1e-300), a, b, s);
      }
      double pixels = x / k.spe_adc;
      if (desaturate)
         pixels = desaturation(pixels, k.n_pixels, desaturation_occupancy);
      return pixels / k.light_yield_pe;
   }

   double hit(double adc, bool low, bool saturated, const CellConstants &k, int layer) const
   {
      double amplitude = adc;
      if (pedestal)
         amplitude = adc - (low ? k.pedestal_lg_adc : k.pedestal_hg_adc);
      if (gain_selection && low)
         amplitude = amplitude * k.gain_ratio;
      double energy;
      if (saturated) // the range top of the cell, wherever the ADC value stands
         energy = to_mip((lg_saturation_adc - k.pedestal_lg_adc) * k.gain_ratio, k);
      else
         energy = to_mip(amplitude, k);
      if (apply_scale)
         energy = energy * k.scale;
      if (to_gev)
         energy = energy * gev_per_mip[layer];
      return energy;
   }
};

// the chain on dense per-cell arrays: one gather per constant, as calocoffea's hot path
struct Calibration : CalibrationChain {
   CellLookup cells;
   std::vector<double> pedestal_hg_adc, pedestal_lg_adc, gain_ratio, spe_adc, n_pixels,
      light_yield_pe, nonlinearity_a, nonlinearity_b, scale;

   Calibration() {} // not an aggregate: PyROOT would try aggregate initialisation

   CellConstants at(std::int64_t c) const
   {
      return {pedestal_hg_adc[c], pedestal_lg_adc[c], gain_ratio[c],     spe_adc[c],       n_pixels[c],
              light_yield_pe[c],  nonlinearity_a[c],  nonlinearity_b[c], scale[c]};
   }

   template <typename E, typename G, typename F, typename L>
   ROOT::RVecD operator()(const ROOT::RVec<E> &adc, const ROOT::RVec<G> &gain,
                          const ROOT::RVec<F> &flags, const ROOT::RVec<L> &layer,
                          const ROOT::RVec<L> &i, const ROOT::RVec<L> &j) const
   {
      ROOT::RVecD out(adc.size());
      for (std::size_t h = 0; h < adc.size(); ++h)
         out[h] = hit(double(adc[h]), gain[h] == 1, (flags[h] & kSaturated) != 0,
                      at(cells.index(layer[h], i[h], j[h])), layer[h]);
      return out;
   }
};

// ------------------------------------------------------------------ digitisation
// Digitised hits of one event, one entry per input hit; ``keep`` says which survive.
struct Digitized {
   ROOT::RVecD adc;
   ROOT::RVec<std::uint8_t> gain;
   ROOT::RVec<std::uint32_t> flags;
   ROOT::RVec<bool> keep;
};

// digitization.digitize on the conditions' dense tables (time is not digitised here)
struct Digitizer {
   CellLookup cells;
   std::vector<double> mip_mev, light_yield_pe, aging, n_pixels, spe_adc, nonlinearity_a,
      nonlinearity_b, pedestal_hg_adc, pedestal_lg_adc, noise_hg_adc, noise_lg_adc, gain_ratio,
      mip_adc;
   std::vector<std::uint8_t> dead, noisy;
   double nonuniformity = 0, pixel_spread = 0, nonlinearity_scale_adc = 0, noisy_factor = 0,
          switch_adc = 0, lg_saturation_adc = 0, adc_max = 0, threshold_mip = 0;
   bool zero_suppression = true, clipping = true;

   template <typename E, typename L>
   Digitized operator()(const ROOT::RVec<E> &energy_mev, const ROOT::RVec<L> &layer,
                        const ROOT::RVec<L> &i, const ROOT::RVec<L> &j,
                        std::uint64_t event_key) const
   {
      const std::size_t n = energy_mev.size();
      Digitized out{ROOT::RVecD(n), ROOT::RVec<std::uint8_t>(n), ROOT::RVec<std::uint32_t>(n),
                    ROOT::RVec<bool>(n)};
      for (std::size_t h = 0; h < n; ++h) {
         const std::int64_t c = cells.index(layer[h], i[h], j[h]);
         double e = double(energy_mev[h]);
         const bool valid = std::isfinite(e) && e >= 0;
         if (!valid)
            e = 0.0;
         auto key = [&](int code) { return rng::stream_key(event_key, h, code); };
         // 1-2. light: non-uniformity, then photo-electrons
         const double smear = 1.0 + nonuniformity * rng::normal(key(rng::kNonuniformity));
         const double mean_pe =
            e / mip_mev[c] * light_yield_pe[c] / aging[c] * std::max(smear, 0.0);
         const std::int64_t n_pe = rng::poisson(key(rng::kPhotons), mean_pe);
         // 3. SiPM saturation with binomial fluctuation
         const double p_fire = -std::expm1(-double(n_pe) / n_pixels[c]);
         const double fired =
            double(rng::binomial(key(rng::kPixels), std::int64_t(n_pixels[c]), p_fire));
         // 4. gain smear of the fired pixels
         const double pixels =
            fired + pixel_spread * std::sqrt(fired) * rng::normal(key(rng::kGainSmear));
         // 5. electronics
         const double x = pixels * spe_adc[c];
         const double y = nonlinearity_b[c] * x / (1.0 + nonlinearity_a[c] * x / nonlinearity_scale_adc);
         // 6. ADC, gain switch, rounding and clipping
         const bool is_noisy = noisy[c] != 0;
         const double noise = rng::normal(key(rng::kNoise)) * (is_noisy ? noisy_factor : 1.0);
         const double hg = pedestal_hg_adc[c] + y + noise_hg_adc[c] * noise;
         const bool low = hg > switch_adc;
         const double lg = pedestal_lg_adc[c] + y / gain_ratio[c] + noise_lg_adc[c] * noise;
         double adc = std::nearbyint(low ? lg : hg);
         std::uint32_t flags = (low ? kLowGain : 0u) | (is_noisy ? kNoisy : 0u);
         if (clipping) {
            const double top = low ? lg_saturation_adc : adc_max;
            const bool saturated = adc > top;
            adc = saturated ? top : std::max(adc, 0.0);
            if (saturated)
               flags |= kSaturated;
         }
         // 7. dead cells and zero suppression (threshold in MIP of the cell)
         bool keep = valid && dead[c] == 0;
         if (zero_suppression) {
            const double amplitude =
               low ? (adc - pedestal_lg_adc[c]) * gain_ratio[c] : adc - pedestal_hg_adc[c];
            keep = keep && !(amplitude < threshold_mip * mip_adc[c]);
         }
         out.adc[h] = adc;
         out.gain[h] = low ? 1 : 0;
         out.flags[h] = flags;
         out.keep[h] = keep;
      }
      return out;
   }
};

// ------------------------------------------------------------------ per-event helpers
// the histogram processor's event sum and hit count: finite energies only, in hit order
inline double finite_sum(const ROOT::RVecD &energy)
{
   double sum = 0.0;
   for (double e : energy)
      if (std::isfinite(e))
         sum += e;
   return sum;
}

inline ROOT::RVec<int> finite_mask(const ROOT::RVecD &energy)
{
   ROOT::RVec<int> ok(energy.size());
   for (std::size_t h = 0; h < energy.size(); ++h)
      ok[h] = std::isfinite(energy[h]) ? 1 : 0;
   return ok;
}

} // namespace calocoffea
