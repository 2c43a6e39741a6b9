#!/usr/bin/env bash
# Issue 6's "done when", for real, then issue 31's faults against the same server: a 24-job sweep with two crashing jobs and one hanging job, run
# with isolation=process and the joblib launcher into an MLflow server on PostgreSQL (both on
# 127.0.0.1, started here), then the same command again. Writes benchmarks/results/reliability_demo.md.
#   bash benchmarks/reliability_demo.sh        (needs Debian's postgresql; run as root or a normal user)
set -euo pipefail
root=$(pwd)
work=$(mktemp -d /tmp/sweep-demo-XXXX); chmod 755 "$work"
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
as=(); [ "$(id -u)" = 0 ] && { as=(runuser -u postgres --); chown postgres "$work"; }
"${as[@]}" "$pgbin/initdb" -D "$work/pg" -U sweep --auth=trust >/dev/null
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -o "-p $pgport -k $work -c listen_addresses=127.0.0.1" -w start >/dev/null
trap '"${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null; kill $mlflow_pid 2>/dev/null || true' EXIT
"$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U sweep mlflow
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mlflow server --host 127.0.0.1 --port "$port" --workers 2 \
  --backend-store-uri "postgresql://sweep@127.0.0.1:$pgport/mlflow" \
  --artifacts-destination "$work/artifacts" >"$work/mlflow.log" 2>&1 &
mlflow_pid=$!
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 1; done
# the cache outside $work, which PostgreSQL's user owns: a cache under a folder another user owns
# is refused (sweep.trust)
mine=$(mktemp -d /tmp/sweep-demo-cache-XXXX)
export MLFLOW_TRACKING_URI=http://127.0.0.1:$port SWEEP_CACHE_DIR=$mine/cache
cmd=(python -m sweep -m hydra/launcher=joblib hydra.launcher.n_jobs=2 isolation=process timeout_s=30
     runtime=torch,onnx batch=1,2,4 resolution=32,48,64,96 '+fault_at={3:segfault,10:exit,17:hang}'
     check.samples=4 bench.warmup=2 bench.min_iters=5 bench.min_seconds=0.2
     hydra.sweep.dir=$work/multirun/reliability tracking.experiment=reliability)
cd "$work"
t0=$(date +%s); set +e
"${cmd[@]}" >first.log 2>&1; rc1=$?
t1=$(date +%s)
"${cmd[@]}" >second.log 2>&1; rc2=$?
t2=$(date +%s); set -e
python3 - "$work" "$rc1" "$rc2" "$((t1 - t0))" "$((t2 - t1))" "${cmd[*]}" > "$root/benchmarks/results/reliability_demo.md" <<'PY'
import json, os, re, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
work, rc1, rc2, s1, s2, cmd = sys.argv[1:]
sweep = Path(work, "multirun", "reliability")
results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"),
           key=lambda p: int(p.parent.name.split("_")[0]))]
client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
runs = client.search_runs([client.get_experiment_by_name("reliability").experiment_id])
jobs = [r for r in runs if r.data.tags.get("sweep.role") == "job"]
second = Path(work, "second.log").read_text()
skipped = len(re.findall(r"skipped, finished before", second))
print("# Reliability demo (issue 6's 'done when')\n")
print("`bash benchmarks/reliability_demo.sh`: PostgreSQL and `mlflow server` on 127.0.0.1, then twice:\n")
print(f"    MLFLOW_TRACKING_URI=http://127.0.0.1:<port> {cmd.replace(work, '<tmp>')}\n")
print(f"First run: {s1} s, exit status {rc1}; second run: {s2} s, exit status {rc2} "
      f"({skipped} of {len(results)} jobs skipped as finished).\n")
ok = sum(r["status"] == "ok" for r in results)
print(f"Job folders: {len(results)}, ok {ok}, failed {len(results) - ok}. MLflow (PostgreSQL): "
      f"{len(jobs)} job runs ({sum(r.info.status == 'FINISHED' for r in jobs)} FINISHED, "
      f"{sum(r.info.status == 'FAILED' for r in jobs)} FAILED), "
      f"{len(runs) - len(jobs)} parent run(s) after both runs.\n")
print("| job | status | reason |\n| --- | --- | --- |")
for r in results:
    if r["status"] != "ok":
        print(f"| {r['job']} | failed | {r['error'][:160]} |")
PY

# --- what a careful attacker and a clumsy user try (issue 31), against the same server ---------
secret=S3cretT0ken
export MLFLOW_TRACKING_URI=http://:$secret@127.0.0.1:$port
set +e
"${cmd[@]}" force=true >third.log 2>&1; rc3=$?          # re-measure all, the token in the URI
small=(python -m sweep -m runtime=torch batch=1,2 check.samples=4 bench.warmup=2 bench.min_iters=5
       bench.min_seconds=0.2 resolution=32 tracking.experiment=twice hydra.sweep.dir=$work/twice)
"${small[@]}" >twice_a.log 2>&1 & a=$!
"${small[@]}" >twice_b.log 2>&1 & b=$!
wait $a; rca=$?; wait $b; rcb=$?
python3 - "$work/planted.pt2" "$work/ran" <<'PY2'
import io, json, os, sys, zipfile, torch
class Plant:
    def __reduce__(self):
        return os.system, (f"touch {sys.argv[2]}",)
m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
torch.export.save(torch.export.export(m, (torch.zeros(1, 3, 32, 32),)), sys.argv[1] + ".clean")
buf = io.BytesIO(); torch.save(Plant(), buf)
with zipfile.ZipFile(sys.argv[1] + ".clean") as zin, zipfile.ZipFile(sys.argv[1], "w") as zout:
    for item in zin.infolist():
        data = zin.read(item.filename)
        zout.writestr(item, buf.getvalue() if item.filename.endswith("sample_inputs/model.pt") else data)
PY2
python -m sweep model=exported model.path=$work/planted.pt2 batch=1 tracking.enabled=false \
  hydra.run.dir=$work/planted >planted.log 2>&1; rcp=$?
mkdir -p "$mine/shared" && chmod 777 "$mine/shared"
python -m sweep resolution=32 cache_dir=$mine/shared tracking.enabled=false \
  hydra.run.dir=$work/shared >shared.log 2>&1; rcs=$?
python -m sweep bench.min_seconds=nan tracking.enabled=false >nan.log 2>&1; rcn=$?
set -e
python3 - "$work" "$secret" "$rc3" "$rca" "$rcb" "$rcp" "$rcs" "$rcn" >> "$root/benchmarks/results/reliability_demo.md" <<'PY'
import os, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
work, secret, rc3, rca, rcb, rcp, rcs, rcn = sys.argv[1:]
client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
runs = client.search_runs([client.get_experiment_by_name("reliability").experiment_id])
jobs = [r for r in runs if r.data.tags.get("sweep.role") == "job"]
folder_runs = {__import__("json").loads(p.read_text())["info"].get("mlflow_run_id")
               for p in Path(work, "multirun", "reliability").glob("*/result.json")}
leaks = [str(p) for p in Path(work).rglob("*") if p.is_file() and not p.is_symlink()
         and secret.encode() in p.read_bytes()]
twice = [Path(work, f"twice_{k}.log").read_text() for k in "ab"]
refused = next((line for t in twice for line in t.splitlines() if "error:" in line), "")
print("\n## Issue 31's faults, against the same server\n")
print(f"- `force=true` with the token in `MLFLOW_TRACKING_URI=http://:<token>@...`: exit {rc3}; "
      f"{len(jobs)} live job runs, {len(runs) - len(jobs)} parent run(s); the live runs are the "
      f"ones the 24 folders name: {set(r.info.run_id for r in jobs) == folder_runs}; files under "
      f"the work folder (logs, results, server artifacts) holding the token: {len(leaks)}.")
print(f"- the same 2-job command twice at once into one folder: exits {rca} and {rcb}; the "
      f"refusal: `{refused.strip()[:200]}`")
print(f"- a `.pt2` whose sample inputs are a pickle that runs `touch`: exit {rcp}; the command "
      f"ran: {Path(work, 'ran').exists()}")
print(f"- a cache folder with mode 777: exit {rcs}; "
      f"`{next((l for l in Path(work, 'shared.log').read_text().splitlines() if 'cache_dir=' in l), '')[:220]}`")
print(f"- `bench.min_seconds=nan`: exit {rcn}; "
      f"`{next((l for l in Path(work, 'nan.log').read_text().splitlines() if 'min_seconds' in l), '')[:160]}`")
PY
cat "$root/benchmarks/results/reliability_demo.md"
