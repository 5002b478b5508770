/** The SDK's version, sent in its `User-Agent` so the gateway's logs tell clients apart. */
export const VERSION = "0.2.0";
