"""pathotune's benchmarks (issue 6): ``python -m benchmarks`` measures every figure against a baseline run in the
same process tree and judges the ratios; ``python -m benchmarks.gpu`` is the GPU script. See BENCHMARKS.md."""
