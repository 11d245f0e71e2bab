import { register } from 'node:module';
register('./node20-globsync.mjs', import.meta.url);
