"""PSNR vs preparation time on the held-out CTA (CT-Bone, 256^2): per-scan from the analytic init vs Render-FM
feedforward + fine-tuning, same 20 training views, same 2 held-out views as `renderfm eval --views 2 --size 256`."""
import json, time, os
import numpy as np
from RenderFMLib.volume import load_volume
from RenderFMLib.presets import get_preset
from RenderFMLib.pipeline import prepare_scene, render_scene_reference
from RenderFMLib.finetune import held_out_views, training_views
from RenderFMLib.optimize import optimize_gaussians, evaluate_views

vol = load_volume("../shared/data/ct/heart_cta_totalseg.nii.gz")
tf = get_preset("CT-Bone")
out = {"volume": vol.name, "tf": tf.name, "size": 256, "train_views": 20, "held_out_views": 2,
       "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()}-core x86 CPU, no GPU"}
for method, budget in (("feedforward", 240.0), ("analytic", 600.0)):
    start = time.perf_counter()
    scene = prepare_scene(vol, tf, method="model" if method == "feedforward" else method)
    prep = time.perf_counter() - start
    held = [(c, render_scene_reference(scene, c)[0]) for c in held_out_views(scene, 2, 256)]
    tic = time.perf_counter()
    cameras = training_views(scene, 20, 256)
    targets = [render_scene_reference(scene, c)[0] for c in cameras]
    references = time.perf_counter() - tic
    _, log = optimize_gaussians(scene, cameras, targets, iterations=None, seconds=budget, sh_degree=3,
                                held_out=held, eval_every_s=15.0)
    out[method] = {"prep_s": round(prep, 2), "reference_views_s": round(references, 2), "iterations": log.iterations,
                   "curve": [(round(t, 1), round(p, 3)) for t, p in log.curve]}
    print(method, json.dumps(out[method]), flush=True)
    with open("docs/results/psnr_vs_time_cta.json", "w") as f:
        json.dump(out, f, indent=1)
