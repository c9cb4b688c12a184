"""Checks and pictures for the reference renderer: agreement with VTK, step-size convergence, contact sheets.

These back the acceptance figures in ``docs/results/reference.md`` and ``docs/reference_contact_sheet.png``; the
``renderfm reference`` command exposes them (``--compare-vtk``, ``--convergence``, ``--contact-sheet``).
"""

from __future__ import annotations

import numpy as np

from .camera import Camera
from .transfer import TransferFunction
from .volume import Volume


def vtk_display_equivalent(image: np.ndarray, volume: Volume, camera: Camera) -> np.ndarray:
    """``image`` ``[H, W, C]`` (rays through pixel centres) resampled as VTK's CPU ray caster displays its own.

    ``vtkFixedPointVolumeRayCastMapper`` casts rays through pixel centres of the region where the volume's box
    projects (its bounding rectangle widened by 2 pixels, clipped to the viewport: ``n`` pixels wide), then
    draws that ray image as an OpenGL texture whose first and last texel centres are stretched to the region's
    outer edges, with linear filtering (``vtkOpenGLRayCastImageDisplayHelper``). Display pixel ``p`` of the region
    therefore shows ray image position ``(p + 0.5) (n - 1) / n``: a magnification by ``n / (n - 1)`` about the
    region's centre, up to half a pixel at its borders. Comparing with VTK through this function isolates the
    ray casting itself from that display step.
    """
    height, width = camera.height, camera.width
    uv, _ = camera.project(volume.corners_ras())
    xs, ys = uv[:, 0], height - uv[:, 1]  # VTK's rows count from the bottom
    min_x, max_x = max(xs.min() - 2.0, 0.0), min(xs.max() + 2.0, width - 1.0)
    min_y, max_y = max(ys.min() - 2.0, 0.0), min(ys.max() + 2.0, height - 1.0)
    if max_x < min_x or max_y < min_y:
        return np.zeros_like(image)
    origin_x, origin_y = int(min_x), int(min_y)
    size_x, size_y = int(max_x - min_x + 1.0), int(max_y - min_y + 1.0)
    bottom_up = image[::-1]
    result = np.zeros_like(bottom_up)
    qx = (np.arange(size_x) + 0.5) * (size_x - 1) / size_x + origin_x
    qy = (np.arange(size_y) + 0.5) * (size_y - 1) / size_y + origin_y
    x0 = np.floor(qx).astype(int)
    y0 = np.floor(qy).astype(int)
    fx = (qx - x0)[None, :, None]
    fy = (qy - y0)[:, None, None]
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    top = bottom_up[y0][:, x0] * (1 - fx) + bottom_up[y0][:, x1] * fx
    bottom = bottom_up[y1][:, x0] * (1 - fx) + bottom_up[y1][:, x1] * fx
    result[origin_y:origin_y + size_y, origin_x:origin_x + size_x] = top * (1 - fy) + bottom * fy
    return np.ascontiguousarray(result[::-1])


def compare_with_vtk(volume: Volume, tf: TransferFunction, cameras: list[Camera],
                     modes=("emission-absorption", "shaded"), step_mm: float | None = None, device="cpu") -> list[dict]:
    """PSNR (sRGB, dB) and SSIM of :func:`~RenderFMLib.reference.render_reference` against VTK's CPU ray caster
    (:func:`~RenderFMLib.vtk_raycast.render_vtk`, ``mapper="cpu"``) for the same volume, TF, cameras and sample
    distance. ``psnr_display_matched`` compares after :func:`vtk_display_equivalent`. The TF's ``shade`` flag is
    set per mode (off for emission-absorption, on for shaded). One dict per (mode, view)."""
    from dataclasses import replace

    from .metrics import psnr, ssim
    from .reference import default_step_mm, render_reference
    from .vtk_raycast import VtkRaycaster

    step = default_step_mm(volume) if step_mm is None else float(step_mm)
    rows = []
    for mode in modes:
        mode_tf = replace(tf, shade=(mode == "shaded"), color_points=tf.color_points.copy(),
                          opacity_points=tf.opacity_points.copy())
        with VtkRaycaster(volume, mode_tf, "cpu", step) as raycaster:
            for index, camera in enumerate(cameras):
                ours, ours_alpha = render_reference(volume, mode_tf, camera, mode=mode, step_mm=step, device=device)
                theirs, theirs_alpha = raycaster.render(camera)
                matched = vtk_display_equivalent(ours, volume, camera)
                rows.append({"mode": mode, "view": index, "step_mm": round(step, 4),
                             "psnr": round(psnr(ours, theirs), 2),
                             "psnr_display_matched": round(psnr(matched, theirs), 2),
                             "ssim": round(ssim(ours, theirs), 4),
                             "alpha_psnr_display_matched": round(psnr(
                                 vtk_display_equivalent(ours_alpha, volume, camera), theirs_alpha,
                                 encoded=False), 2)})
    return rows


def convergence_curve(volume: Volume, tf: TransferFunction, camera: Camera, mode: str = "cinematic",
                      fractions=(1.0, 0.5, 0.25, 0.125, 0.0625), device="cpu", illumination=None) -> list[dict]:
    """Render with steps ``fraction * smallest spacing`` and compare each level with the next finer one and with
    the finest (PSNR in dB on sRGB). Returns one dict per level; the last has no finer level."""
    from .illumination import compute_illumination
    from .metrics import psnr
    from .reference import render_reference

    if mode == "cinematic" and illumination is None:
        illumination = compute_illumination(volume, tf, device=device)
    spacing = float(volume.spacing.min())
    images = [render_reference(volume, tf, camera, mode=mode, step_mm=f * spacing, device=device,
                               illumination=illumination)[0] for f in fractions]
    rows = []
    for index, fraction in enumerate(fractions):
        row = {"step_fraction": fraction, "step_mm": round(fraction * spacing, 4)}
        if index + 1 < len(images):
            row["psnr_vs_half_step"] = round(psnr(images[index], images[index + 1]), 2)
            row["psnr_vs_finest"] = round(psnr(images[index], images[-1]), 2)
        rows.append(row)
    return rows


def contact_sheet(tiles: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str],
                  gap: int = 4, label_height: int = 18, label_width: int = 150) -> np.ndarray:
    """Arrange sRGB uint8 tiles ``[H, W, 3]`` (rows x columns, all the same size) into one labelled image.

    Row labels go in a left margin (wrapped at ``/``), column labels above the columns; text is drawn with Pillow's
    default font in light grey on the dark background.
    """
    from PIL import Image, ImageDraw

    rows, cols = len(tiles), len(tiles[0])
    h, w = tiles[0][0].shape[:2]
    sheet_h = label_height + rows * h + (rows + 1) * gap
    sheet_w = label_width + cols * w + (cols + 1) * gap
    sheet = np.full((sheet_h, sheet_w, 3), 24, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            y = label_height + gap + r * (h + gap)
            x = label_width + gap + c * (w + gap)
            sheet[y:y + h, x:x + w] = tile
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for c, text in enumerate(column_labels):
        draw.text((label_width + gap + c * (w + gap) + 4, 3), text, fill=(210, 210, 210))
    for r, text in enumerate(row_labels):
        y = label_height + gap + r * (h + gap) + 4
        for line_index, line in enumerate(text.split("/")):
            draw.text((6, y + 14 * line_index), line.strip(), fill=(210, 210, 210))
    return np.asarray(image)
