# Embeds the cluster script as a byte array: cmake -DIN=cluster.lua -DOUT=cluster_lua.h -P embed-lua.cmake
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}" "/* Generated from src/cluster.lua by cmake/embed-lua.cmake; do not edit. */\nstatic const char cluster_lua[] = {\n${bytes}};\n")
