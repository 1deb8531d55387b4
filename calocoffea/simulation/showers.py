"""Shower parametrisations: one formula per function, numpy arrays in and out.

- Electromagnetic: GFlash (Grindhammer & Peters, hep-ex/0001020; Geant4 gflash), with
  the sampling-structure corrections of PHYSICS.md: per-event correlated fluctuations of
  the Gamma longitudinal profile, two-component radial profile, spot counts and depths.
- Hadronic: interaction depth ~ Exp(lambda_I); EM fraction <f_em> = 1 - (E/E0)^(k-1)
  fluctuating per event (Beta distribution); longitudinal shapes of Bock et al. (NIM 186
  (1981) 533) for the EM (X0 scaled) and hadronic (lambda_I scaled) parts; radial
  exponentials (CALICE arXiv:1602.08578 form); e/h and an intrinsic fluctuation of the
  invisible energy.
- Sampling fluctuations: a deposit dE [GeV] becomes Gamma(dE/c^2, c^2), so the sum over a
  shower has relative width c/sqrt(E): c is the stochastic term.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special, stats

FloatArray = npt.NDArray[np.floating]

# ---- GFlash, electromagnetic ------------------------------------------------------------
#: Spot count N = SPOT_NUMERATOR / SPOT_SAMPLING_RESOLUTION * E^SPOT_EXPONENT (PHYSICS.md).
SPOT_NUMERATOR = 10.3
SPOT_SAMPLING_RESOLUTION = 0.11
SPOT_EXPONENT = 0.959
#: Mean free path of a photon before conversion: 9/7 X0 (PDG).
PHOTON_CONVERSION_X0 = 9.0 / 7.0


def gflash_longitudinal(
    energy_gev: FloatArray, ec_mev: float, z: float, fs: float, e_hat: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Means and widths of ln T and ln alpha for a sampling calorimeter.

    Returns ``(mu_ln_t, sigma_ln_t, mu_ln_alpha, sigma_ln_alpha)``; the means are the logs of
    T_sam = T_hom - 0.55/F_S - 0.69 (1 - e_hat) and alpha_sam = alpha_hom - 0.476/F_S with
    T_hom = ln y - 0.812 and alpha_hom = 0.81 + (0.458 + 2.26/Z) ln y, y = E/Ec.
    """
    ln_y = np.log(np.asarray(energy_gev) * 1000.0 / ec_mev)
    t_hom = ln_y - 0.812
    alpha_hom = 0.81 + (0.458 + 2.26 / z) * ln_y
    t_sam = np.maximum(t_hom - 0.55 / fs - 0.69 * (1.0 - e_hat), 1.0)
    alpha_sam = np.maximum(alpha_hom - 0.476 / fs, 1.1)
    s_t = np.clip(1.0 / (-2.5 + 1.25 * ln_y), 0.0, 0.5)
    s_a = np.clip(1.0 / (-0.82 + 0.79 * ln_y), 0.0, 0.5)
    # below the validity of the formulas (y small) the inverse can turn negative
    s_t = np.where(-2.5 + 1.25 * ln_y > 0, s_t, 0.5)
    s_a = np.where(-0.82 + 0.79 * ln_y > 0, s_a, 0.5)
    return np.log(t_sam), s_t, np.log(alpha_sam), s_a


def gflash_correlation(energy_gev: FloatArray, ec_mev: float) -> FloatArray:
    """Correlation of ln T and ln alpha in a sampling calorimeter."""
    return 0.784 - 0.023 * np.log(np.asarray(energy_gev) * 1000.0 / ec_mev)


def sample_gflash_profile(
    rng: np.random.Generator,
    energy_gev: FloatArray,
    ec_mev: float,
    z: float,
    fs: float,
    e_hat: float,
) -> tuple[FloatArray, FloatArray]:
    """Per-event (T, alpha): depth of maximum [X0] and shape of the Gamma profile."""
    mu_t, s_t, mu_a, s_a = gflash_longitudinal(energy_gev, ec_mev, z, fs, e_hat)
    rho = gflash_correlation(energy_gev, ec_mev)
    z1, z2 = rng.standard_normal((2, np.size(energy_gev)))
    plus, minus = np.sqrt((1 + rho) / 2), np.sqrt((1 - rho) / 2)
    t = np.exp(mu_t + s_t * (plus * z1 + minus * z2))
    alpha = np.exp(mu_a + s_a * (plus * z1 - minus * z2))
    return np.maximum(t, 1e-3), np.maximum(alpha, 1.1)


def gamma_fractions(
    start: FloatArray, end: FloatArray, origin: FloatArray, shape: FloatArray, rate: FloatArray
) -> FloatArray:
    """Fraction of a Gamma(shape, rate) profile starting at ``origin`` that falls in
    [start, end) for every (event, layer); events along axis 0, layers along axis 1."""
    o, a, b = origin[:, None], shape[:, None], rate[:, None]
    lo = np.clip(start[None, :] - o, 0.0, None)
    hi = np.clip(end[None, :] - o, 0.0, None)
    return special.gammainc(a, b * hi) - special.gammainc(a, b * lo)


def spot_count(energy_gev: FloatArray) -> FloatArray:
    """Mean number of GFlash spots for an EM (sub)shower of ``energy_gev``."""
    e = np.clip(np.asarray(energy_gev), 0.0, None)
    return SPOT_NUMERATOR / SPOT_SAMPLING_RESOLUTION * e**SPOT_EXPONENT


def spot_shape(t: FloatArray, alpha: FloatArray, z: float) -> tuple[FloatArray, FloatArray]:
    """Gamma (shape, rate) of spot depths: T_s = T (0.698 + 0.00212 Z),
    alpha_s = alpha (0.639 + 0.00334 Z)."""
    t_s = t * (0.698 + 0.00212 * z)
    a_s = np.maximum(alpha * (0.639 + 0.00334 * z), 1.01)
    return a_s, (a_s - 1.0) / t_s


def gflash_radial(
    tau: FloatArray,
    energy_gev: FloatArray,
    z: FloatArray | float,
    fs: FloatArray | float,
    e_hat: FloatArray | float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Core radius Rc, tail radius Rt [Moliere radii] and core probability p at tau = t/T."""
    ln_e = np.log(energy_gev)
    rc = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * z) * tau
    k1, k2, k3 = 0.659 - 0.00309 * z, 0.645, -2.59
    k4 = 0.3585 + 0.0412 * ln_e
    rt = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z
    p3 = 1.313 - 0.0686 * ln_e
    arg = (p2 - tau) / p3
    p = p1 * np.exp(arg - np.exp(arg))
    # sampling-structure corrections
    rc = rc - 0.0203 * (1 - e_hat) + 0.0397 * np.exp(-tau) / fs
    rt = rt - 0.14 * (1 - e_hat) - 0.495 * np.exp(-tau) / fs
    p = p + (1 - e_hat) * (0.348 - 0.642 * np.exp(-((tau - 1) ** 2)) / fs)
    return np.maximum(rc, 1e-3), np.maximum(rt, 1e-3), np.clip(p, 0.0, 1.0)


def sample_two_component_radius(
    rng: np.random.Generator, rc: FloatArray, rt: FloatArray, p: FloatArray
) -> FloatArray:
    """r = R sqrt(u/(1-u)) with R = Rc with probability p, else Rt."""
    n = np.size(rc)
    r_scale = np.where(rng.random(n) < p, rc, rt)
    u = rng.random(n) * 0.9999  # caps r at 100 R
    return r_scale * np.sqrt(u / (1.0 - u))


def sampling_fluctuation(
    rng: np.random.Generator, deposit_gev: FloatArray, stochastic: FloatArray | float
) -> FloatArray:
    """Gamma(dE/c^2, c^2): mean dE, variance c^2 dE."""
    c2 = np.asarray(stochastic) ** 2
    out = np.zeros(np.shape(deposit_gev))
    pos = deposit_gev > 0
    c2 = np.broadcast_to(c2, np.shape(deposit_gev))[pos]
    out[pos] = rng.gamma(deposit_gev[pos] / c2, c2)
    return out


# ---- hadrons ------------------------------------------------------------------------
#: <f_em> = 1 - (E/E0)^(k-1) for charged pions (Groom; Wigmans) [memory].
FEM_E0_GEV = 1.0
FEM_K = 0.83
#: Event-to-event spread of f_em: sigma = FEM_SIGMA_10 (E/10 GeV)^-FEM_SIGMA_SLOPE
#: [guess: measured f_em distributions are broad, rms 0.1-0.15 at 10-100 GeV].
FEM_SIGMA_10 = 0.12
FEM_SIGMA_SLOPE = 0.1
#: Intrinsic fluctuation of the visible hadronic energy (nuclear binding energy losses):
#: 13 %/sqrt(E_h) (Wigmans, Calorimetry, the compensating limit) [memory].
INTRINSIC_HADRONIC = 0.13
#: Hadronic sampling fluctuations relative to the EM ones [guess: about twice, Wigmans].
HADRONIC_SAMPLING_RATIO = 2.0
#: Bock et al. longitudinal parameters (PHYSICS.md) [memory].
BOCK_B = 0.2198


def fem_mean(energy_gev: FloatArray) -> FloatArray:
    """Mean EM fraction of a pion shower."""
    return 1.0 - (np.asarray(energy_gev) / FEM_E0_GEV) ** (FEM_K - 1.0)


def fem_sigma(energy_gev: FloatArray) -> FloatArray:
    """Event-to-event standard deviation of f_em."""
    return FEM_SIGMA_10 * (np.asarray(energy_gev) / 10.0) ** (-FEM_SIGMA_SLOPE)


def sample_fem(rng: np.random.Generator, energy_gev: FloatArray) -> FloatArray:
    """f_em ~ Beta with the mean and spread above (clipped where the Beta cannot reach)."""
    m = np.clip(fem_mean(energy_gev), 1e-3, 1 - 1e-3)
    s = fem_sigma(energy_gev)
    var = np.minimum(s**2, 0.9 * m * (1 - m))
    nu = m * (1 - m) / var - 1.0
    return rng.beta(m * nu, (1 - m) * nu)


def bock_shape(energy_gev: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Bock shape a and hadronic rate d (per lambda_I); the EM rate is BOCK_B per X0."""
    ln_e = np.log(np.maximum(np.asarray(energy_gev), 0.05))
    a = np.maximum(0.6165 + 0.3183 * ln_e, 0.3)
    d = 0.9099 - 0.0237 * ln_e
    return a, d


def e_over_pi(energy_gev: FloatArray, e_over_h: float) -> FloatArray:
    """Expected e/pi = 1 / (<f_em> + (1 - <f_em>) h/e)."""
    f = fem_mean(energy_gev)
    return 1.0 / (f + (1.0 - f) / e_over_h)


#: Radial exponential slopes: EM core in Moliere radii, hadronic halo in lambda_I
#: (CALICE AHCAL: beta_core ~ 3 cm, beta_halo ~ 12 cm in steel) [read form, guessed values].
CORE_SLOPE_RM = 3.0 / 1.92
CORE_SLOPE_LAMBDA = 3.0 / 18.7
HALO_SLOPE_LAMBDA = 12.0 / 18.7
#: Share of the non-EM energy in the wide halo; the rest follows the core slope
#: [guess: keeps about 95 % of a pion shower within one lambda_I of the axis (PDG)].
HALO_FRACTION = 0.3


def sample_exponential_radius(rng: np.random.Generator, slope: FloatArray) -> FloatArray:
    """Radius of a density ~ exp(-r/slope) per unit area: r ~ Gamma(2, slope)."""
    return rng.gamma(2.0, 1.0, np.size(slope)) * slope


# ---- muons and other minimum ionising tracks ----------------------------------------
#: FWHM of the standard Landau density in units of xi.
LANDAU_FWHM_XI = 4.018
_grid = np.linspace(-3.0, 3.0, 60001)
_pdf = stats.landau.pdf(_grid)
_LANDAU_MODE = float(_grid[np.argmax(_pdf)])
_half = _grid[_pdf >= 0.5 * _pdf.max()]
_LANDAU_FWHM = float(_half[-1] - _half[0])
#: Truncation of the Landau tail (in units of scipy's scale) to keep the mean finite.
LANDAU_TAIL_CUT = 200.0


def sample_landau(rng: np.random.Generator, mpv: FloatArray, xi: FloatArray) -> FloatArray:
    """Energy loss with most probable value ``mpv`` and Landau width ``xi`` (same unit)."""
    n = np.size(mpv)
    x = stats.landau.rvs(size=n, random_state=rng)
    bad = x > LANDAU_TAIL_CUT
    while np.any(bad):
        x[bad] = stats.landau.rvs(size=int(bad.sum()), random_state=rng)
        bad = x > LANDAU_TAIL_CUT
    scale = np.asarray(xi) * LANDAU_FWHM_XI / _LANDAU_FWHM
    return np.maximum(np.asarray(mpv) + scale * (x - _LANDAU_MODE), 0.0)
