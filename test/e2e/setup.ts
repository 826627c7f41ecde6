// Keep matrix-js-sdk's request logging out of the test output.
import { logger } from "matrix-js-sdk/lib/logger.js";
logger.setLevel("warn");
