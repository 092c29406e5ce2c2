import { z } from 'zod';
import { NavigatorError } from '../../shared/errors.ts';
import { parseParams } from '../../shared/params.ts';
import type { ControlRegistrar } from '../control/server.ts';

// The read-only image methods of the control protocol: is an image here and ready, and does it
// still verify. The sender of a transfer asks them before and after shipping.

/** What these methods need of the image store (ImageStore fits). */
export interface ImageQueries {
  status(id: string): Promise<unknown>;
  verify(id: string): Promise<unknown>;
}

const ImageParams = z.object({ image: z.string().min(1).max(256).describe('Content id of the image (64 hex digits)') }).strict();
const IMAGE_ID = /^[0-9a-f]{64}$/;

export function registerImageQueries(control: ControlRegistrar, images: ImageQueries): void {
  control.register('image.status', async (params) => images.status(imageId(parseParams('image.status', ImageParams, params).image)));
  control.register('image.verify', async (params) => images.verify(imageId(parseParams('image.verify', ImageParams, params).image)));
}

/** Image ids are hashes; anything path-like is an attempt to reach outside the store. */
function imageId(id: string): string {
  if (id.includes('/') || id.includes('\\') || id.includes('..') || id.startsWith('~')) {
    throw new NavigatorError('PATH_OUTSIDE_STORE', `image id ${JSON.stringify(id.slice(0, 100))} is a path; images are named by their 64-hex-digit content id`);
  }
  if (!IMAGE_ID.test(id)) throw new NavigatorError('BAD_REQUEST', `image id ${JSON.stringify(id.slice(0, 100))} is not a 64-hex-digit content id`);
  return id;
}
