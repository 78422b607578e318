{
  "targets": [{
    "target_name": "adapters_node",
    "sources": [
      "<!@(node -p \"require('fs').readdirSync('native').filter(f=>f.endsWith('.cpp')).map(f=>'native/'+f).join(' ')\")",
      "<!@(node -p \"require('fs').readdirSync('native/kernels').filter(f=>f.endsWith('.cpp')&&!f.endsWith('_selftest.cpp')).map(f=>'native/kernels/'+f).join(' ')\")"
    ],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fexceptions"],
    "ldflags": ["-pthread"],
    "libraries": ["-ldl"]
  }]
}
