"""Time mode on fluorescence-like sequences (issue 33): a dark, textureless background gets no
flow beside moving objects and stays put, and nothing is warped in from the frame's edge band."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, shift

from napari_style_transfer import stylize
from napari_style_transfer.frames import EDGE_BAND, link_frames


def as_tensor(grey: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(grey[None, None], 3, axis=1)).float()


def blob(size: int, centre: tuple[float, float], radius: float, seed: int) -> np.ndarray:
    """A soft-edged textured disc in [0, 1] (its texture moves with it)."""
    yy, xx = np.mgrid[0:size, 0:size]
    body = 1.0 / (1.0 + np.exp((np.hypot(yy - centre[0], xx - centre[1]) / radius - 1.0) * 8.0))
    pattern = gaussian_filter(np.random.default_rng(seed).random((size, size)), 1.5)
    pattern = np.roll(
        (pattern - pattern.min()) / np.ptp(pattern), (round(centre[0]), round(centre[1])), (0, 1)
    )
    return body * (0.6 + 0.4 * pattern)


def dark_field(signal: np.ndarray, seed: int) -> np.ndarray:
    """``signal`` on a dark background with camera noise of its own."""
    noise = np.random.default_rng(seed).normal(0.0, 0.004, signal.shape)
    return np.clip(0.03 + 0.8 * signal + noise, 0.0, 1.0).astype(np.float32)


def test_the_dark_background_beside_a_moving_object_gets_no_flow():
    # TV-L1 fills a textureless background with the motion of what moves nearby; warped along,
    # the styled background smeared with every frame
    before = dark_field(blob(64, (32, 20), 7, 1), 1)
    after = dark_field(blob(64, (32, 23), 7, 1), 2)
    link = link_frames(as_tensor(before), as_tensor(after))
    yy, xx = np.mgrid[0:64, 0:64]
    distance = np.hypot(yy - 32, xx - 23)
    flow = link.flow[0].numpy()
    assert not flow[:, distance > 20].any()  # the object's glow reaches 10 px, the test's window 2 more
    assert np.median(flow[1][distance < 4]) < -2.0  # the object itself is followed (3 px back)


def test_a_moving_pixel_is_not_warped_from_the_edge_band():
    # the network draws a frame of its own along the edges; warped inward it became a line
    field = gaussian_filter(np.random.default_rng(3).random((64, 96)), 2.0)
    field = (field - field.min()) / np.ptp(field)
    before, after = field[:, 16:80], shift(field, (0, 2), order=3, mode="reflect")[:, 16:80]
    link = link_frames(as_tensor(before), as_tensor(after))
    band = slice(8, -8), slice(0, EDGE_BAND + 2)  # sources within EDGE_BAND of the left edge
    # all but where the texture is flat enough that no motion explains the frame as well
    assert (link.fresh[0, 0][band] > 0).float().mean() > 0.95
    assert (link.reliable[0, 0][band] > 0).float().mean() < 0.05
    assert link.reliable[0, 0][8:-8, EDGE_BAND + 4 : -8].float().mean() > 0.9


def test_a_dark_background_stays_put_while_an_object_crawls_across_it(style):
    movie = np.stack([dark_field(blob(48, (14, 10 + 2 * t), 5, 7), 20 + t) for t in range(4)])
    result = stylize(movie, style, frames="time", size=48, steps=6, time_steps=3, weights="random")
    yy, xx = np.mgrid[0:48, 0:48]
    far = (yy > 14 + 5 + 12) & (xx > EDGE_BAND) & (xx < 48 - EDGE_BAND)  # 12 px below the path, off the edges
    for t in range(1, len(movie)):
        assert np.abs(result[t] - result[t - 1])[far].mean() < 0.001  # before issue 33: up to 0.003
