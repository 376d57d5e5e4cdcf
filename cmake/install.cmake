# install.cmake -- where `cmake --install` puts agentwire, and the .deb (cpack -G DEB).
