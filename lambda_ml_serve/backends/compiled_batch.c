/*
 * Batch entry point of a compiled tree model, built into the same shared library as the C code
 * tl2cgen generates for the model (header.h + main.c).
 *
 * lms_model.h is written by the compiled backend's prepare step and defines:
 *   LMS_NUM_FEATURE  the model's number of features (so one row fits in a stack array)
 *   LMS_METADATA     a JSON string describing the library (feature names, source, toolchain)
 */
#include <math.h>
#include <stddef.h>

#include "header.h"
#include "lms_model.h"

/* One prediction per row is all the Python side reads; prepare rejects other models earlier. */
#if N_TARGET != 1 || MAX_N_CLASS != 1
#error "the compiled backend serves single-output models only"
#endif

/* The JSON metadata embedded at build time, so the library is the whole artifact. */
const char* lms_metadata(void) {
  return LMS_METADATA;
}

/*
 * Predict n_rows rows of n_features float32 values each (row-major) into out[n_rows].
 * NaN means missing, as in XGBoost. Returns 0, or -1 if n_features is not the model's.
 */
int lms_predict_batch(const float* X, size_t n_rows, size_t n_features, float* out) {
  union Entry row[LMS_NUM_FEATURE];
  if (n_features != LMS_NUM_FEATURE) {
    return -1;
  }
  for (size_t r = 0; r < n_rows; ++r) {
    const float* x = X + r * LMS_NUM_FEATURE;
    for (size_t j = 0; j < LMS_NUM_FEATURE; ++j) {
      /* tl2cgen marks a missing value with missing == -1, not with the NaN itself. */
      if (isnan(x[j])) {
        row[j].missing = -1;
      } else {
        row[j].fvalue = x[j];
      }
    }
    /* The generated predict() adds every tree's leaf to *result, then base_score and the
     * objective's transformation (pred_margin = 0), like XGBoost's inplace_predict. */
    out[r] = 0.0f;
    predict(row, 0, out + r);
  }
  return 0;
}
