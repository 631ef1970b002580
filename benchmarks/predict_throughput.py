"""Posterior-predictive throughput: draws x patients per second, with bounded memory.

``predict`` of ``--patients`` simulated patients, ``--num-samples`` draws, ``--batch-size`` chunks,
with / without latent draws and calibration: seconds, draws x patients / s, output size, peak RSS increase. ::

    python benchmarks/predict_throughput.py --patients 10000 --num-samples 1000 --json predict.json
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, reset_peak, rss_mib, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=10000)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    quiet(args.threads)
    import bayesfuse as bf

    data, _ = bf.datasets.simulate(n_patients=args.patients, modalities={"a": ("gaussian", 200),
                                                                          "b": ("gaussian", 100)},
                                   missing_rate=0.2, test_fraction=0.0, seed=0)
    model = bf.FusionModel(data, heads={"subtype": "categorical"}, latent_dim=16, hidden=128, device=args.device)
    model.fit(max_epochs=2, kl_warmup_epochs=1, validation_fraction=0.0, seed=0, progress=False)
    # a calibration map (timing only: fitted on 300 of the scored patients) so predict pays for applying it
    model.calibrate(data.subset(ids=data.sample_ids[:300]), num_samples=50)
    rows = []
    for bs in args.batch_size:
        for keep, cal in ((False, False), (True, False), (False, True)):
            base, ok = reset_peak(collect=True)
            t = time.perf_counter()
            post = model.predict(data, num_samples=args.num_samples, seed=0, batch_size=bs, return_latent=keep,
                                 calibrated=cal)
            wall = time.perf_counter() - t
            out_mib = (post.probs("subtype").nbytes + post.latent.nbytes) / 2**20
            rows.append({"patients": args.patients, "num_samples": args.num_samples, "batch_size": bs,
                         "return_latent": keep, "calibrated": cal, "seconds": wall,
                         "draws_x_patients_per_s": args.num_samples * args.patients / wall,
                         "output_mib": out_mib, "peak_increment_mib": (rss_mib(True) - base) if ok else None})
            del post
    print(f"patients={args.patients} num_samples={args.num_samples} threads={args.threads} "
          f"load(1 min)={os.getloadavg()[0]:.1f}")
    print(f"{'batch':>6} {'latent':>6} {'calib':>6} | {'seconds':>8} {'draws*pat/s':>12} | {'output MiB':>10} {'peak +MiB':>9}")
    for r in rows:
        print(f"{r['batch_size']:>6} {str(r['return_latent']):>6} {str(r['calibrated']):>6} | {r['seconds']:>8.2f} "
              f"{r['draws_x_patients_per_s']:>12.3g} | {r['output_mib']:>10.0f} {r['peak_increment_mib'] or 0:>9.0f}")
    if args.json:
        write_json(rows, args.json)


if __name__ == "__main__":
    main()
