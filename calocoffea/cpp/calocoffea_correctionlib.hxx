// calocoffea constants applied through correctionlib's C++ evaluator (per hit, per constant).
//
// What an RDataFrame analysis that only has the correctionlib JSON does; the same chain as
// calocoffea_rdf.hxx. Needs correctionlib's headers and library: call
// correctionlib.register_pyroot_binding() in Python before declaring this file.
#pragma once
#pragma clang fp contract(off)

#include "calocoffea_rdf.hxx"
#include "correction.h"

#include <memory>
#include <string>

namespace calocoffea {

struct CorrectionlibCalibration : CalibrationChain {
   std::unique_ptr<correction::CorrectionSet> set;
   correction::Correction::Ref pedestal_hg_adc, pedestal_lg_adc, gain_ratio, spe_adc, n_pixels,
      light_yield_pe, nonlinearity_a, nonlinearity_b, scale;

   CorrectionlibCalibration() {} // not an aggregate: PyROOT would try aggregate initialisation

   void load(const std::string &path)
   {
      set = correction::CorrectionSet::from_file(path);
      pedestal_hg_adc = set->at("pedestal_hg_adc");
      pedestal_lg_adc = set->at("pedestal_lg_adc");
      gain_ratio = set->at("gain_ratio");
      spe_adc = set->at("spe_adc");
      n_pixels = set->at("n_pixels");
      light_yield_pe = set->at("light_yield_pe");
      nonlinearity_a = set->at("nonlinearity_a");
      nonlinearity_b = set->at("nonlinearity_b");
      scale = set->at("scale");
   }

   CellConstants at(int layer, int i, int j) const
   {
      auto value = [&](const correction::Correction::Ref &c) {
         return c->evaluate({std::string("value"), layer, i, j});
      };
      return {value(pedestal_hg_adc), value(pedestal_lg_adc), value(gain_ratio),
              value(spe_adc),         value(n_pixels),        value(light_yield_pe),
              value(nonlinearity_a),  value(nonlinearity_b),  value(scale)};
   }

   template <typename E, typename G, typename F, typename L>
   ROOT::RVecD operator()(const ROOT::RVec<E> &adc, const ROOT::RVec<G> &gain,
                          const ROOT::RVec<F> &flags, const ROOT::RVec<L> &layer,
                          const ROOT::RVec<L> &i, const ROOT::RVec<L> &j) const
   {
      ROOT::RVecD out(adc.size());
      for (std::size_t h = 0; h < adc.size(); ++h)
         out[h] = hit(double(adc[h]), gain[h] == 1, (flags[h] & kSaturated) != 0,
                      at(layer[h], i[h], j[h]), layer[h]);
      return out;
   }
};

} // namespace calocoffea
