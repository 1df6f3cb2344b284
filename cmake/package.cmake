# The Debian package of the server (`make package`, CPack's DEB generator): the converge
# binary, a systemd unit (packaging/converge.service) running it as the system user converge,
# the default config /etc/converge/converge.yaml (a conffile), data in /var/lib/converge. The
# maintainer scripts (packaging/postinst, prerm, postrm) create the user and the directory.
# Only the `server` component goes in: the library, headers and CMake package (`dev`) and the
# benchmarks do not. tests/package checks the result.
set(CONVERGE_PACKAGING_DIR ${CMAKE_SOURCE_DIR}/packaging)

# EXCLUDE_FROM_ALL: `cmake --install` (make install) installs the binary and the library as
# before; these system paths go into the package only.
install(FILES ${CONVERGE_PACKAGING_DIR}/converge.service DESTINATION /lib/systemd/system
  COMPONENT server EXCLUDE_FROM_ALL)
install(FILES ${CONVERGE_PACKAGING_DIR}/converge.yaml DESTINATION /etc/converge
  COMPONENT server EXCLUDE_FROM_ALL)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/configuration.md
  ${CMAKE_SOURCE_DIR}/docs/server.md DESTINATION share/doc/converge
  COMPONENT server EXCLUDE_FROM_ALL)

set(CPACK_PACKAGE_NAME converge)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "sidecar keeping data consistent across microservices (event log, sagas, store)")
set(CPACK_PACKAGE_DESCRIPTION
  "converge serve: a durable event log with consumer groups, outbox relays, sagas and a shared
document store over HTTP, on embedded storage that needs no other server.")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL server)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_NAME converge)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "converge maintainers <converge@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The shared libraries the binary links (Boost.JSON/URL, libpq, OpenSSL, SQLite, yaml-cpp,
# xxhash, nats.c for the JetStream log backend) by dpkg-shlibdeps; adduser for the postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CONVERGE_PACKAGING_DIR}/postinst ${CONVERGE_PACKAGING_DIR}/prerm
  ${CONVERGE_PACKAGING_DIR}/postrm ${CONVERGE_PACKAGING_DIR}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
