# install.cmake -- where `cmake --install` puts agentwire, and the .deb (cpack -G DEB).
#
#   cmake -S . -B build-pkg -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr
#   cmake --build build-pkg && (cd build-pkg && cpack -G DEB)
# (packaging/build-deb.sh does this with Debian's hardening flags;
# scripts/test-package.sh builds, installs and runs the package.)
#
# Installed, under the prefix unless said otherwise:
#   bin/agentwire
#   share/man/man1/agentwire.1.gz      made at build time from `agentwire --help`
#                                      (scripts/gen-man.py), like docs/operations.md
#   lib/systemd/system/agentwire.service
#   share/doc/agentwire/               README.md and the operator's docs
#   <sysconfdir>/agentwire/agentwire.env  settings, every one commented out; the
#                                      sysconfdir is /etc for the prefix /usr (so in
#                                      the .deb, where it is a conffile), else PREFIX/etc
include(GNUInstallDirs)

# The version: AGENTWIRE_VERSION of src/main.c, what `agentwire --version` says.
set(_aw_version "")
if(EXISTS "${PROJECT_SOURCE_DIR}/src/main.c")
  file(STRINGS "${PROJECT_SOURCE_DIR}/src/main.c" _aw_version_line
       REGEX "^#define AGENTWIRE_VERSION \"[^\"]+\"")
  if(_aw_version_line MATCHES "\"([^\"]+)\"")
    set(_aw_version "${CMAKE_MATCH_1}")
  endif()
endif()
if(NOT _aw_version)
  message(WARNING "install.cmake: no AGENTWIRE_VERSION in src/main.c; packaging as 0.0.0")
  set(_aw_version "0.0.0")
endif()
set(AW_PACKAGE_VERSION "${_aw_version}" CACHE STRING "Version of the agentwire package (default: the source's)")
if(NOT AW_PACKAGE_VERSION STREQUAL _aw_version)
  message(STATUS "agentwire: packaging version ${AW_PACKAGE_VERSION} (the source says ${_aw_version})")
endif()

set(AW_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "Where the systemd unit goes: relative to the prefix, or absolute")
option(AW_MANPAGE "Generate and install the agentwire(1) man page (needs python3)" ON)

# Where things end up once installed, as written into the man page and the unit.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(AW_ETC_DIR "/etc/agentwire")
else()
  set(AW_ETC_DIR "${CMAKE_INSTALL_PREFIX}/etc/agentwire")
endif()
if(IS_ABSOLUTE "${AW_SYSTEMD_UNITDIR}")
  set(AW_UNIT_DIR "${AW_SYSTEMD_UNITDIR}")
else()
  set(AW_UNIT_DIR "${CMAKE_INSTALL_PREFIX}/${AW_SYSTEMD_UNITDIR}")
endif()
set(AW_BINARY "${CMAKE_INSTALL_FULL_BINDIR}/agentwire")
set(AW_DOC_DIR "${CMAKE_INSTALL_FULL_DOCDIR}")
set(AW_STATE_DIR "/var/lib/agentwire")

# ---------------------------------------------------------------- the binary
install(TARGETS agentwire RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# ---------------------------------------------------------- the man page
if(AW_MANPAGE)
  find_program(AW_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  find_program(AW_PYTHON3 NAMES python3)
  if(CMAKE_CROSSCOMPILING)
    message(WARNING "agentwire: cross-compiling; the man page (made by running the built binary) is left out")
  elseif(NOT AW_PYTHON3)
    message(WARNING "agentwire: no python3; the man page is left out (install python3, or -DAW_MANPAGE=OFF)")
  else()
    add_custom_command(
      OUTPUT ${CMAKE_BINARY_DIR}/agentwire.1 ${CMAKE_BINARY_DIR}/agentwire.1.gz
      COMMAND ${AW_PYTHON3} ${PROJECT_SOURCE_DIR}/scripts/gen-man.py
              --binary $<TARGET_FILE:agentwire> -o ${CMAKE_BINARY_DIR}/agentwire.1 --gzip
              --sysconfdir ${AW_ETC_DIR} --unitdir ${AW_UNIT_DIR} --docdir ${AW_DOC_DIR}
              --statedir ${AW_STATE_DIR}
      DEPENDS agentwire ${PROJECT_SOURCE_DIR}/scripts/gen-man.py
      COMMENT "Generating agentwire.1 from agentwire --help"
      VERBATIM)
    add_custom_target(manpage ALL DEPENDS ${CMAKE_BINARY_DIR}/agentwire.1 ${CMAKE_BINARY_DIR}/agentwire.1.gz)
    install(FILES ${CMAKE_BINARY_DIR}/agentwire.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
  endif()
endif()

# ------------------------------------------------ the unit and the settings
configure_file(${PROJECT_SOURCE_DIR}/packaging/agentwire.service.in
               ${CMAKE_BINARY_DIR}/packaging/agentwire.service @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/packaging/agentwire.env.in
               ${CMAKE_BINARY_DIR}/packaging/agentwire.env @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/packaging/agentwire.service DESTINATION ${AW_SYSTEMD_UNITDIR})

# /etc is decided at install time, from the prefix in force then (cpack and
# `cmake --install --prefix DIR` choose it after configuration): /etc for
# /usr, PREFIX/etc otherwise, so a staged install never writes to the real /etc.
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(_aw_etc \"/etc/agentwire\")
  else()
    set(_aw_etc \"\${CMAKE_INSTALL_PREFIX}/etc/agentwire\")
  endif()
  file(INSTALL DESTINATION \"\${_aw_etc}\" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
       FILES \"${CMAKE_BINARY_DIR}/packaging/agentwire.env\")
")

# ------------------------------------------------------------- the docs
install(FILES ${PROJECT_SOURCE_DIR}/README.md
              ${PROJECT_SOURCE_DIR}/docs/operations.md
              ${PROJECT_SOURCE_DIR}/docs/protocol.md
              ${PROJECT_SOURCE_DIR}/docs/agents.md
              ${PROJECT_SOURCE_DIR}/docs/cluster.md
              ${PROJECT_SOURCE_DIR}/docs/architecture.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ------------------------------------------------------------- the .deb
foreach(_aw_script postinst prerm postrm)
  configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${_aw_script}.in
                 ${CMAKE_BINARY_DIR}/packaging/debian/${_aw_script} @ONLY)
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/packaging/debian/conffiles "${AW_ETC_DIR}/agentwire.env\n")

set(CPACK_PACKAGE_NAME "agentwire")
set(CPACK_PACKAGE_VERSION "${AW_PACKAGE_VERSION}")
set(CPACK_PACKAGE_VENDOR "agentwire")
set(AW_PACKAGE_MAINTAINER "agentwire maintainers <agentwire@localhost>" CACHE STRING
    "Maintainer field of the .deb")
set(CPACK_PACKAGE_CONTACT "${AW_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "WebSocket gateway that delivers AI agent events to their users")
set(CPACK_PACKAGE_DESCRIPTION
"agentwire delivers the events of AI agents (agent_started, agent_thinking,
tool_executing, tool_completed, agent_completed, and any event you publish)
to the WebSocket connections of the user they belong to, in order, once
each, resuming after reconnects. Users authenticate with a JWT (HS256,
RS256, ES256, EdDSA or an identity provider's JWKS); publishers use an HTTP
API with an API key. Written in C on libuv: one event loop per core, TLS,
permessage-deflate, durable history in SQLite, or several nodes as one
gateway on Redis.
.
This package holds the server, its man page and a hardened systemd unit
(agentwire.service, not enabled on install).")
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_STRIP_FILES TRUE)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# dpkg-shlibdeps reads the binary's libraries: libuv1, libssl3, libjansson4,
# libhttp-parser2.9, zlib1g, libhiredis0.14, libsqlite3-0, libcurl4, libc6.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# procps: /bin/kill, the unit's ExecReload (SIGHUP reloads the TLS files).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "procps")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "redis-server")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/packaging/debian/conffiles
    ${CMAKE_BINARY_DIR}/packaging/debian/postinst
    ${CMAKE_BINARY_DIR}/packaging/debian/prerm
    ${CMAKE_BINARY_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_GENERATOR "DEB")
include(CPack)
