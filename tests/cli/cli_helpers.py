"""Shared by the command-line tests (a uniquely named module: `conftest` is ambiguous across test folders)."""

# a tiny training budget: every key through the flags or --set, as a user would write it
TINY = ["--channels", "8", "--set", "net.channel_mult=1,2", "--batch-size", "16", "--set", "data.n=100",
        "--set", "log.n_samples=4", "--set", "log.sample_steps=2", "--threads", "1", "--quiet",
        "--set", "log.log_every=2", "--set", "log.val_every=2"]
