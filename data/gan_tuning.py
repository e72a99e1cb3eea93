"""Chapter 4's GAN tuning probes (data/gan_tuning.md): train one GAN exactly as `python -m dgm train gan`
does (dgm.run.train, same seed, same random stream) and print one JSON line: the sample metrics of the
kept (best) weights, and every 1,000 steps those of the weights at that step, from the averaged
generator ("avg") and, with ema > 0, the raw one ("raw"). The metrics are drawn inside fork_rng, so the
run is the CLI's run, step for step.

    OMP_NUM_THREADS=1 python data/gan_tuning.py DATA SEED STEPS LR TAG ['{"key": value, ...}'] [EVAL_EVERY]
      >> data/gan_tuning.jsonl

e.g. `python data/gan_tuning.py ring-sharp 0 6000 2e-3 pack2 '{"pack": 2}'` (the learning-rate schedule
follows STEPS; records made before the trainer owned schedules name it `lr_decay_steps`).
"""
import json, sys, time
import torch
from dgm import run, train as train_mod

data_name, seed, steps, lr, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
overrides = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
eval_every = int(sys.argv[7]) if len(sys.argv) > 7 else 500
traj = []
orig_eval = train_mod._BestWeights.evaluate

def short(m):
    return {k: round(m[k], 4) for k in ("modes_captured", "high_quality_frac", "mode_std_ratio", "energy_distance")}

class Raw:
    def __init__(s, m): s.m = m; s.device = m.device
    def sample(s, n): return s.m.sample(n, averaged=False)

def evaluate(self, step):
    out = orig_eval(self, step)
    if step > 0 and (step % 1000 == 0 or step == steps):
        with torch.random.fork_rng():
            self.model.eval()
            rec = {"step": step, "val": self.history.val[-1][1] if self.history.val else None,
                   "avg": short(run.score_samples(self.model, data_name))}
            if self.model.config["ema"]:
                rec["raw"] = short(run.score_samples(Raw(self.model), data_name))
            self.model.train()
        traj.append(rec)
    return out

train_mod._BestWeights.evaluate = evaluate
t = time.time()
model, history, result = run.train("gan", data_name, seed=seed, steps=steps, lr=lr, overrides=overrides,
                                   progress=False, device="cpu", eval_every=eval_every)
print(json.dumps({"tag": tag, "data": data_name, "seed": seed, "steps": steps, "lr": lr, "overrides": overrides, "config": model.config,
                  "best_step": history.best_step, "best": short(result), "traj": traj,
                  "wall": round(time.time() - t, 1)}), flush=True)
