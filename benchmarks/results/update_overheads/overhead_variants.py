import sys, time, statistics, torch
sys.path.insert(0, "/work/main/benchmarks")
torch.set_num_threads(1)
from phase_timing import filled_buffers, MatmulRecorder, matmul_replay, timed, flops
from torchrl_vmbpo.algorithms.presets import build_agent, default_config
from torchrl_vmbpo.envs.real import make_env
algo = sys.argv[1] if len(sys.argv) > 1 else "mbpo"
dev = torch.device("cpu")
cfg = default_config(algo, "Hopper-v5", device="cpu")
env = make_env("Hopper-v5")
variants = {}
def make(name, cpp=False):
    torch.manual_seed(0)
    agent = build_agent(cfg.replace(compile="on"), env)
    real, model = filled_buffers(agent, env, dev)
    ratio = agent.capabilities.real_ratio
    def step():
        agent.update(agent.sample_batch(real, model, cfg.batch_size, ratio))
    t = time.perf_counter()
    with torch._inductor.config.patch(cpp_wrapper=cpp):
        for _ in range(3): step()
    print(name, "compile", round(time.perf_counter() - t, 1), flush=True)
    for _ in range(5): step()
    return step
t0=time.perf_counter(); base = make("base"); print("base build+compile", round(time.perf_counter()-t0,1))
cpp = make("cpp", cpp=True) if "cpp" in sys.argv else None
# matmul shapes from an eager agent
ag = build_agent(cfg.replace(compile="off"), env); r, m = filled_buffers(ag, env, dev)
rec = MatmulRecorder()
with rec: ag.update(ag.sample_batch(r, m, cfg.batch_size, ag.capabilities.real_ratio))
mm = matmul_replay(rec.shapes, dev)
res = {k: [] for k in ["matmul", "base", "base_skipguard", "cpp", "cpp_skipguard"]}
N = 20
for rnd in range(7):
    res["matmul"].append(timed(mm, dev, N))
    res["base"].append(timed(base, dev, N))
    with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
        res["base_skipguard"].append(timed(base, dev, N))
    if cpp:
        res["cpp"].append(timed(cpp, dev, N))
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            res["cpp_skipguard"].append(timed(cpp, dev, N))
mmt = statistics.median(res["matmul"])
for k, v in res.items():
    if v:
        med = statistics.median(v)
        print(f"{algo} {k}: {med*1e3:.2f} ms  fraction {mmt/med:.3f}")
