{
  "targets": [
    {
      "target_name": "tas_compute",
      "sources": ["tas_compute.c", "gemm_conv.c", "batchnorm.c", "elementwise.c", "optim.c"],
      "include_dirs": ["/usr/include/openblas"],
      "libraries": ["-lopenblas", "-lm"],
      "cflags": ["-O3", "-std=c11", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"] }
    }
  ]
}
