"""Upper-tail quantiles of Student's t and chi-square, in plain Python.

The residual tests' thresholds (``hotpixel_shm.temporal.thresholds``) need
two numbers per run; importing ``scipy.stats`` for them cost 0.6-0.9 s and
``scipy.special`` 0.15-0.25 s of a run's fixed costs (issue 10).  The tail
probabilities come from the continued fractions of the regularized
incomplete beta and gamma functions (modified Lentz's method), and the
quantile from a Newton iteration on the logarithm of the tail, kept inside
a bracket.  Relative error about 1e-12 against ``scipy.stats`` (tested),
limited by ``math.lgamma`` at very many degrees of freedom.

Numerics only: ``math``, no numpy.
"""
from __future__ import annotations

import math

__all__ = ["t_isf", "chi2_isf"]

_TINY = 1e-300
_EPS = 1e-16
_MAX_TERMS = 100_000


def _lentz(coefficient, first):
    """The continued fraction ``first + a1 / (1 + a2 / (1 + ...))`` where
    ``a_m = coefficient(m)``, by the modified Lentz method."""
    f = first if first != 0 else _TINY
    c, d = f, 0.0
    for m in range(1, _MAX_TERMS):
        a = coefficient(m)
        d = 1.0 + a * d
        d = _TINY if d == 0 else d
        c = 1.0 + a / c
        c = _TINY if c == 0 else c
        d = 1.0 / d
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < _EPS:
            return f
    raise ArithmeticError("continued fraction did not converge")


def _log_beta_half(a):
    """``log B(a, 1/2)``; for large ``a`` without the cancellation of
    ``lgamma(a) - lgamma(a + 1/2)`` (both about ``a log a``): Stirling's
    series, whose leading terms cancel analytically."""
    if a < 64.0:
        return math.lgamma(a) + math.lgamma(0.5) - math.lgamma(a + 0.5)

    def tail(x):        # lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2)
        x2 = x * x
        return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * x2)) / x2) / x2) / x
    # lgamma(a) - lgamma(a + 1/2) = -log(a)/2 - a log1p(1/(2a)) + 1/2 + tail(a) - tail(a + 1/2)
    u = 0.5 / a
    # 1/2 - a log1p(u) = a (u - log1p(u)), u - log1p(u) by its series (u <= 1/128)
    half_minus = a * u * u * (0.5 - u * (1.0 / 3.0 - u * (0.25 - u * (0.2 - u * (1.0 / 6.0
                                                                                 - u / 7.0)))))
    diff = -0.5 * math.log(a) + half_minus + tail(a) - tail(a + 0.5)
    return math.lgamma(0.5) + diff


def _log_ibeta_cf(a, b, x, log_front=None):
    """``log I_x(a, b)``, the regularized incomplete beta, by its continued
    fraction (converges fast for ``x < (a + 1) / (a + b + 2)``); ``log_front``:
    ``log(x**a (1 - x)**b / (a B(a, b)))`` when the caller has it more
    accurately."""
    def coefficient(m):
        k = m // 2
        if m % 2:       # d_{2k+1}
            return -(a + k) * (a + b + k) * x / ((a + 2 * k) * (a + 2 * k + 1))
        return k * (b - k) * x / ((a + 2 * k - 1) * (a + 2 * k))
    cf = _lentz(coefficient, 1.0)
    if log_front is None:
        log_front = (a * math.log(x) + b * math.log1p(-x)
                     - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)) - math.log(a))
    return log_front - math.log(cf)


def _log_t_sf(t, df):
    """``log P(T > t)`` of Student's t with ``df`` degrees of freedom, ``t > 0``."""
    a, b = 0.5 * df, 0.5
    x = df / (df + t * t)
    # x**a (1 - x)**b from t itself: x is near 1 when df is large, and
    # a log(x) would multiply its rounding by a
    log_xa = -a * math.log1p(t * t / df)
    log_yb = b * (2.0 * math.log(t) - math.log(df + t * t))
    if x < (a + 1.0) / (a + b + 2.0):
        front = log_xa + log_yb - _log_beta_half(a) - math.log(a)
        return math.log(0.5) + _log_ibeta_cf(a, b, x, front)
    # near the centre: 1 - I_{1-x}(b, a), no cancellation to fear there
    y = t * t / (df + t * t)
    front = log_xa + log_yb - _log_beta_half(a) - math.log(b)
    return math.log(0.5) + math.log1p(-math.exp(_log_ibeta_cf(b, a, y, front)))


def _log_t_pdf(t, df):
    return (math.lgamma(0.5 * (df + 1)) - math.lgamma(0.5 * df) - 0.5 * math.log(df * math.pi)
            - 0.5 * (df + 1) * math.log1p(t * t / df))


def _log_gamma_q(a, x):
    """``log Q(a, x)``, the regularized upper incomplete gamma function."""
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x > a + 1.0:
        # Q = front / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...)), as 1 / cf:
        # the fraction b0 + a1 / (b1 + a2 / (b2 + ...)) with a_m = -m (m - a)
        # and b_m = x + 2m + 1 - a, rescaled to unit denominators for _lentz
        def unit(m):
            bm1 = x + 2 * (m - 1) + 1.0 - a
            bm = x + 2 * m + 1.0 - a
            return -m * (m - a) / (bm1 * bm)
        cf = _lentz(unit, 1.0) * (x + 1.0 - a)
        return log_front - math.log(cf)
    # the series of P, then Q = 1 - P (Q is not small here)
    term = total = 1.0 / a
    n = a
    for _ in range(_MAX_TERMS):
        n += 1.0
        term *= x / n
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return math.log1p(-math.exp(log_front + math.log(total)))


def _solve(log_sf, log_pdf, log_p, lo, hi):
    """The ``x`` in ``(lo, hi)`` with ``log_sf(x) = log_p`` (``log_sf``
    falling): Newton's steps on the logarithm, bisection when a step
    leaves the bracket."""
    x = 0.5 * (lo + hi)
    for _ in range(200):
        g = log_sf(x) - log_p
        if g > 0:
            lo = x
        else:
            hi = x
        # d log_sf / dx = -pdf / sf
        r = log_pdf(x) - (g + log_p)
        new = x + g * math.exp(-r) if -700.0 < r < 700.0 else math.nan
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - x) <= 1e-15 * abs(new) or hi - lo <= 1e-15 * abs(hi):
            return new
        x = new
    return x


def _bracket(log_sf, log_p, start):
    lo, hi = 0.0, start
    while log_sf(hi) > log_p:
        lo, hi = hi, 2.0 * hi
    return lo, hi


def t_isf(p: float, df: float) -> float:
    """``t`` with ``P(T > t) = p`` for Student's t with ``df`` degrees of freedom.

    Parameters
    ----------
    p : float
        Upper-tail probability, ``0 < p < 0.5``.
    df : float
        Degrees of freedom, positive.

    Returns
    -------
    float
        What ``scipy.stats.t.isf(p, df)`` returns, within about 1e-12 relative.
    """
    if not 0 < p < 0.5 or not df > 0:
        raise ValueError(f"t_isf needs 0 < p < 0.5 and df > 0, got p={p}, df={df}")
    log_p = math.log(p)

    def log_sf(t):
        return _log_t_sf(t, df) if t > 0 else math.log(0.5)

    def log_pdf(t):
        return _log_t_pdf(t, df)
    lo, hi = _bracket(log_sf, log_p, max(1.0, math.sqrt(-2.0 * log_p)))
    return _solve(log_sf, log_pdf, log_p, lo, hi)


def chi2_isf(p: float, df: float) -> float:
    """``x`` with ``P(X > x) = p`` for chi-square with ``df`` degrees of freedom.

    Parameters
    ----------
    p : float
        Upper-tail probability, ``0 < p < 1``.
    df : float
        Degrees of freedom, positive.

    Returns
    -------
    float
        What ``scipy.stats.chi2.isf(p, df)`` returns, within about 1e-12 relative.
    """
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"chi2_isf needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    log_p = math.log(p)
    a = 0.5 * df

    def log_sf(x):
        return _log_gamma_q(a, 0.5 * x) if x > 0 else 0.0

    def log_pdf(x):
        return -0.5 * x + (a - 1.0) * math.log(0.5 * x) - math.lgamma(a) - math.log(2.0)
    lo, hi = _bracket(log_sf, log_p, df + max(1.0, -2.0 * log_p))
    return _solve(log_sf, log_pdf, log_p, lo, hi)
