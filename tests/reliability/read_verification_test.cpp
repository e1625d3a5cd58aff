// placeholder: filled by the hardening work (issue 10)
#include <gtest/gtest.h>
