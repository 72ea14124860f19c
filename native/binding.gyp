{
  "targets": [
    {
      "target_name": "tas_sum",
      "sources": ["sum.c"],
      "cflags": ["-O3", "-fno-fast-math", "-ffp-contract=off"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-fno-fast-math", "-ffp-contract=off"] }
    }
  ]
}
