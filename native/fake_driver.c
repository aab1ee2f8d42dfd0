/*
 * TEST-ONLY stand-in for WinDivert64.sys: a PE file that carries a driver version resource (fake_driver.rc) and
 * nothing else, so the doctor's file checks (presence, version, signature presence) run against a real PE under
 * Wine. It is never loaded as a driver (the double needs none).
 */
int retroflect_fake_driver;
