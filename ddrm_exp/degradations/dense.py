"""Dense references for the SVD protocol: an operator's matrices written out, the checks every
operator must pass, and an operator stored as dense SVD factors.

For small images only (an ``n x n`` matrix per operator): the tests and the benchmark scripts
use these as the ground truth the efficient operators are compared against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ddrm_exp.degradations.base import HFunctions

__all__ = ["DenseMatrices", "DenseSVD", "check_svd_protocol", "dense_matrices"]


@dataclass(frozen=True)
class DenseMatrices:
    """An operator's functions as float64 matrices (column j = the function of e_j)."""

    H: Tensor  # (m, n)
    Ht: Tensor  # (n, m)
    V: Tensor  # (n, n)
    Vt: Tensor  # (n, n)
    U: Tensor  # (m, m)
    Ut: Tensor  # (m, m)
    pinv: Tensor  # (n, m)
    s: Tensor  # (m,) singular values


def dense_matrices(op: HFunctions) -> DenseMatrices:
    n, m = op.n, op.m
    eye_n = torch.eye(n, dtype=torch.float64)
    eye_m = torch.eye(m, dtype=torch.float64)
    return DenseMatrices(
        H=op.H(eye_n).T,
        Ht=op.Ht(eye_m).T,
        V=op.V(eye_n).T,
        Vt=op.Vt(eye_n).T,
        U=op.U(eye_m).T,
        Ut=op.Ut(eye_m).T,
        pinv=op.H_pinv(eye_m).T,
        s=op.singulars(),
    )


def check_svd_protocol(
    op: HFunctions, atol: float = 1e-10, rtol: float = 1e-9, pinv_rcond: float = 1e-8
) -> DenseMatrices:
    """Assert what DDRM relies on: orthonormal U and V, H = U Σ Vᵀ, Hᵀ its transpose, sorted
    non-negative singular values and H⁺ the Moore-Penrose inverse. Returns the matrices.

    Build ``op`` in float64: the tolerances are float64's."""
    d = dense_matrices(op)
    n, m = op.n, op.m
    tol = {"atol": atol, "rtol": rtol}
    assert d.s.shape == (m,) and d.H.shape == (m, n), (d.s.shape, d.H.shape)
    assert d.s.dtype == torch.float64, d.s.dtype
    assert bool((d.s >= 0).all()), "singular values must be >= 0"
    assert bool((d.s[:-1] >= d.s[1:]).all()), "singular values must be sorted descending"
    eye_n, eye_m = torch.eye(n, dtype=torch.float64), torch.eye(m, dtype=torch.float64)
    torch.testing.assert_close(d.V @ d.V.T, eye_n, **tol)
    torch.testing.assert_close(d.V.T @ d.V, eye_n, **tol)
    torch.testing.assert_close(d.U @ d.U.T, eye_m, **tol)
    torch.testing.assert_close(d.U.T @ d.U, eye_m, **tol)
    torch.testing.assert_close(d.Vt, d.V.T, **tol)
    torch.testing.assert_close(d.Ut, d.U.T, **tol)
    torch.testing.assert_close(d.H, d.U @ torch.diag(d.s) @ d.V[:, :m].T, **tol)
    torch.testing.assert_close(d.Ht, d.H.T, **tol)
    expected = torch.from_numpy(np.linalg.pinv(d.H.numpy(), rcond=pinv_rcond))
    torch.testing.assert_close(d.pinv, expected, atol=1e-8, rtol=1e-7)
    proj = d.pinv @ d.H
    torch.testing.assert_close(proj, proj.T, **tol)
    torch.testing.assert_close(proj @ proj, proj, **tol)
    torch.testing.assert_close(d.H @ d.pinv @ d.H, d.H, **tol)
    torch.testing.assert_close(d.pinv @ d.H @ d.pinv, d.pinv, **tol)
    return d


class DenseSVD(HFunctions):
    """``H = U Σ Vᵀ`` of a blur acting on each channel by the same ``n x n`` matrix, stored
    densely: ``U``, ``V`` (n, n) and the ``3n`` singular values sorted as the protocol wants."""

    def __init__(self, shape: tuple[int, int, int], u: Tensor, s: Tensor, v: Tensor) -> None:
        self.shape = shape
        c = shape[0]
        self.u, self.v = u.contiguous(), v.contiguous()
        values, self.order = torch.sort(s.repeat(c), descending=True, stable=True)
        self._singulars = values.to(u.dtype)

    def _to_spec(self, vec: Tensor, basis: Tensor) -> Tensor:
        b = vec.shape[0]
        c, h, w = self.shape
        # (x_c)ᵀ B = (Bᵀ x_c)ᵀ per channel: one (B*c, n) @ (n, n) matmul.
        return (vec.reshape(b * c, h * w) @ basis).reshape(b, -1)[:, self.order]

    def _from_spec(self, vec: Tensor, basis: Tensor) -> Tensor:
        b = vec.shape[0]
        c, h, w = self.shape
        flat = torch.empty_like(vec)
        flat[:, self.order] = vec
        return (flat.reshape(b * c, h * w) @ basis.T).reshape(b, -1)

    def Vt(self, vec: Tensor) -> Tensor:
        return self._to_spec(vec, self.v)

    def V(self, vec: Tensor) -> Tensor:
        return self._from_spec(vec, self.v)

    def Ut(self, vec: Tensor) -> Tensor:
        return self._to_spec(vec, self.u)

    def U(self, vec: Tensor) -> Tensor:
        return self._from_spec(vec, self.u)

    def singulars(self) -> Tensor:
        return self._singulars
